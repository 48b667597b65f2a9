"""`sw lsp`: the language server (pygls, over stdio). It reuses the front end and never
imports torch.

Checking runs off the event loop, one document version at a time per document: an edit that
arrives while a version is being checked makes that check stop at its next phase (after
parsing, after elaboration) and its result is dropped, so typing never waits for a stale
check. Requests for a document the client never opened are answered (with nothing) from the
file on disk where there is one; no request stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from stackwise_dsl.lsp import convert, outline
from stackwise_dsl.source import MAX_FILE_BYTES
from stackwise_dsl.version import __version__

_KINDS = {
    "block": lsp.SymbolKind.Class,
    "stack": lsp.SymbolKind.Struct,
    "let": lsp.SymbolKind.Constant,
    "grow": lsp.SymbolKind.Event,
    "stage": lsp.SymbolKind.Method,
    "section": lsp.SymbolKind.Namespace,
    "include": lsp.SymbolKind.File,
    "extends": lsp.SymbolKind.File,
}


_UNFIT = object()  # a message that does not fit the protocol, already answered or dropped

log = logging.getLogger("sw.lsp")

_DOCUMENT_NOTIFICATIONS = (lsp.TEXT_DOCUMENT_DID_CHANGE, lsp.TEXT_DOCUMENT_DID_CLOSE,
                           lsp.TEXT_DOCUMENT_DID_SAVE)  # fmt: skip


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, answering what pygls alone leaves unanswered or answers with a
    traceback: a request whose parameters do not fit the protocol gets JSON-RPC's
    invalid-params error (-32602) naming the method and the place; a message that is not a
    JSON-RPC 2.0 request (a method that is not a string, an id on a notification, a request
    after `shutdown`) gets invalid-request (-32600) where it has an id; a notification that
    does not fit, or is about a document that is not open, is dropped with one line on
    stderr; an internal error's answer carries its message, not a traceback."""

    def structure_message(self, data):
        if not isinstance(data, dict) or "jsonrpc" not in data:
            return data  # a nested object, or not JSON-RPC (handle_message refuses it)
        if data.get("jsonrpc") != "2.0":
            return self._refuse(data, '`jsonrpc` must be "2.0"')
        if "method" not in data:
            return super().structure_message(data)  # a response to a request of ours
        method = data["method"]
        if not isinstance(method, str):
            return self._refuse(data, "`method` must be a string")
        kind = self.get_message_type(method)
        if kind is None:  # a method without a type: pygls's generic message (or not found)
            return super().structure_message(data)
        if "id" in data and kind.__name__.endswith("Notification"):
            return self._refuse(data, f"{method} is a notification, so it takes no `id`")
        try:
            return self._converter.structure(data, kind)
        except Exception as e:
            said = f"the parameters of {method} do not fit the protocol ({_first_line(e)})"
            if "id" in data:
                error = JsonRpcInvalidParams(message=said).to_response_error()
                self._send_response(data["id"], error=error)
            else:
                log.warning("sw lsp: dropped a notification: %s", said)
            return _UNFIT

    def _refuse(self, data: dict, said: str):
        """JSON-RPC's invalid-request error, to the message's id (null where it has no usable
        one, as JSON-RPC 2.0 asks), and a line on stderr."""
        ident = data.get("id")
        if not isinstance(ident, int | str) or isinstance(ident, bool):
            ident = None
        log.warning("sw lsp: refused a message: %s", said)
        self.answer_error(ident, -32600, f"invalid request: {said}")
        return _UNFIT

    def answer_error(self, ident, code: int, said: str) -> None:
        """An error response written as JSON-RPC has it, `"id": null` included."""
        self._send_data({"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": said}})

    def handle_message(self, message):
        if message is _UNFIT:
            return None
        if not hasattr(message, "jsonrpc"):  # JSON, but not a JSON-RPC message
            if isinstance(message, dict):
                return self._refuse(message, "a message needs `jsonrpc`, `method` or `result`")
            return self._refuse({}, "a message is a JSON object")
        method = getattr(message, "method", None)
        if method == lsp.EXIT and not hasattr(message, "id"):
            # at once, whatever runs (a check of a huge spec): the protocol's exit code, 0
            # after a shutdown request, 1 without one; nothing is left to write
            os._exit(0 if self._shutdown else 1)
        if self._shutdown and method is not None and hasattr(message, "id"):
            self._refuse({"id": message.id}, "the server is shutting down")
            return None
        if method in _DOCUMENT_NOTIFICATIONS and not hasattr(message, "id"):
            uri = message.params.text_document.uri
            if self.workspace.text_documents.get(_unquoted(uri)) is None:
                log.warning("sw lsp: dropped %s for %s, which is not open", method, uri)
                return None
        return super().handle_message(message)

    def _send_response(self, msg_id, result=None, error=None):
        if error is not None and error.code == -32603:  # say what failed, not where
            error = lsp.ResponseError(code=error.code, message=f"sw lsp: {error.message}")
        return super()._send_response(msg_id, result=result, error=error)


def _unquoted(uri: str) -> str:
    from urllib.parse import unquote

    return unquote(uri)


class _OneLine(logging.Formatter):
    """Log lines without tracebacks (set SW_LSP_DEBUG=1 to see them)."""

    def formatException(self, ei) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None
        said = super().format(record).rstrip()
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            said += f" ({type(e).__name__}: {e})"
        return said


def _first_line(e: Exception) -> str:
    """Where the parameters went wrong, in cattrs' own words ("invalid value for type,
    expected int @ $.params.position.line")."""
    from cattrs import transform_error

    try:
        said = transform_error(e, path="$")
    except Exception:  # not a structuring error cattrs can explain
        said = [str(e) or type(e).__name__]
    return "; ".join(said[:3])


class SwServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(
            "sw",
            __version__,
            text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
            protocol_cls=_Protocol,
        )
        self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sw-check")
        self.latest: dict[str, int] = {}  # uri -> the newest version seen
        self.host = None  # the machine, probed once (no GPU probe per keystroke)
        self.checked: dict = {}  # uri -> (version, its IR if it checked clean) of the last check

    def text_of(self, uri: str) -> str | None:
        """The open document's text, or the file's on disk, or None (also for what `sw check`
        would not read: a FIFO, a device, a file over 1 MiB)."""
        from pathlib import Path

        from stackwise_dsl.elaborate.load import read_text

        doc = self.workspace.text_documents.get(_unquoted(uri))
        if doc is not None:
            return doc.source
        try:
            return read_text(Path(convert.path_of(uri)))
        except (OSError, UnicodeDecodeError, ValueError):
            return None

    def report_server_error(self, error: Exception, source) -> None:
        """An error outside any request: a body that is not JSON is answered with JSON-RPC's
        parse error (-32700, id null); anything else is one line on stderr, not a pop-up."""
        import json

        if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
            said = f"parse error: the message is not JSON ({error})"
            self.protocol.answer_error(None, -32700, said)
            return
        log.warning("sw lsp: %s: %s", type(error).__name__, error)

    def encoding(self) -> str:
        """The position encoding agreed with the client (UTF-16 unless it chose another)."""
        try:
            chosen = self.workspace.position_encoding
        except Exception:  # before initialize: the protocol's default
            return convert.UTF16
        return str(getattr(chosen, "value", chosen) or convert.UTF16)

    def stale(self, uri: str, version: int) -> bool:
        return self.latest.get(uri, version) != version


server = SwServer()


# --- diagnostics --------------------------------------------------------------------------------


def _check(ls: SwServer, uri: str, version: int, text: str) -> list[lsp.Diagnostic] | None:
    """The document's diagnostics, or None when a newer version made this check stale."""
    from stackwise_dsl.elaborate import elaborate_text
    from stackwise_dsl.frontend import _report
    from stackwise_dsl.machine.host import Host

    if ls.host is None:
        ls.host = Host.detect()
    if ls.stale(uri, version):  # a newer edit came while this one waited its turn
        return None
    path = convert.path_of(uri)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:  # as `sw check` refuses the file
        top = lsp.Position(line=0, character=0)
        first = text[: text.find("\n")] if "\n" in text else text[:1000]
        end = lsp.Position(line=0, character=convert.units(first.rstrip("\r"), ls.encoding()))
        said = (f"{path} is {size:,} bytes; spec files are read up to {MAX_FILE_BYTES:,} bytes "
                "(1 MiB)")  # fmt: skip
        error = lsp.DiagnosticSeverity.Error
        return [lsp.Diagnostic(range=lsp.Range(start=top, end=end), message=said, code="SW004",
                               severity=error, source=convert.SOURCE)]  # fmt: skip
    elaborated = elaborate_text(text, path, incremental=True)
    if ls.stale(uri, version):
        return None
    report = _report(path, elaborated, ls.host)
    if ls.stale(uri, version):
        return None
    ls.checked[uri] = (version, report.spec if report.ok else None)
    return convert.diagnostics_for(path, report.diagnostics, report.sources, ls.encoding(),
                                   via=elaborated.via)  # fmt: skip


async def _publish(ls: SwServer, uri: str, version: int) -> None:
    ls.latest[uri] = version
    text = ls.text_of(uri)
    if text is None:
        return
    loop = asyncio.get_running_loop()
    try:
        found = await loop.run_in_executor(ls.checker, _check, ls, uri, version, text)
    except Exception as e:  # a bug in a check must not stop the server: say it as a diagnostic
        top = lsp.Position(line=0, character=0)
        said = f"sw could not check this file: {type(e).__name__}: {e}"
        found = [
            lsp.Diagnostic(
                range=lsp.Range(start=top, end=top),
                message=said,
                severity=lsp.DiagnosticSeverity.Error,
                source=convert.SOURCE,
            )
        ]
    if found is None or ls.stale(uri, version):
        return
    ls.text_document_publish_diagnostics(
        lsp.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=found)
    )


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: SwServer, params: lsp.DidOpenTextDocumentParams) -> None:
    await _publish(ls, params.text_document.uri, params.text_document.version)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: SwServer, params: lsp.DidChangeTextDocumentParams) -> None:
    await _publish(ls, params.text_document.uri, params.text_document.version)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: SwServer, params: lsp.DidSaveTextDocumentParams) -> None:
    uri = params.text_document.uri
    await _publish(ls, uri, ls.latest.get(uri, 0))


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: SwServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    from stackwise_dsl.syntax.incremental import forget

    ls.latest[uri] = -1  # any check in progress is stale
    ls.checked.pop(uri, None)
    forget(convert.path_of(uri))
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


# --- requests -----------------------------------------------------------------------------------


def _parsed(ls: SwServer, uri: str):
    from stackwise_dsl.syntax.incremental import reparse

    text = ls.text_of(uri)
    if text is None:
        return None, None
    return reparse(text, convert.path_of(uri)).document, text


def _at_cursor(ls: SwServer, params, *, in_strings: bool = False):
    """A position request's document (its syntax tree, None where it does not parse), its text
    and the cursor's offset in it; None where there is no text, or the cursor is in a comment
    or (unless `in_strings`: an include's path) a string, where nothing is offered."""
    doc, text = _parsed(ls, params.text_document.uri)
    if text is None:
        return None
    at = convert.offset(text, params.position, ls.encoding())
    if not in_strings and outline.in_comment_or_string(text, at):
        return None
    return doc, text, at


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: SwServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    """`sw fmt`'s text as one edit; nothing for a document with syntax errors."""
    from stackwise_dsl.syntax.format import format_document
    from stackwise_dsl.syntax.parser import parse

    uri = params.text_document.uri
    text = ls.text_of(uri)
    if text is None:
        return None
    parsed = parse(text, convert.path_of(uri))
    if parsed.document is None:
        return []
    formatted = format_document(parsed.document)  # what `sw fmt` writes
    if formatted == text:
        return []
    lines = text.split("\n")
    end = lsp.Position(line=len(lines) - 1, character=convert.units(lines[-1], ls.encoding()))
    whole = lsp.Range(start=lsp.Position(line=0, character=0), end=end)
    return [lsp.TextEdit(range=whole, new_text=formatted)]


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: SwServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    doc, _ = _parsed(ls, params.text_document.uri)
    if doc is None:
        return []
    sources = {doc.source.name: doc.source}
    encoding = ls.encoding()

    def make(s: outline.Symbol) -> lsp.DocumentSymbol:
        return lsp.DocumentSymbol(
            name=s.name, detail=s.detail or None, kind=_KINDS[s.kind],
            range=convert.range_of(s.span, sources, encoding),
            selection_range=convert.range_of(s.name_span or s.span, sources, encoding),
            children=[make(c) for c in s.children] or None,
        )  # fmt: skip

    return [make(s) for s in outline.outline(doc)]


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: SwServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    uri = params.text_document.uri
    here = _at_cursor(ls, params, in_strings=True)
    if here is None or here[0] is None:
        return None
    doc, _, at = here
    found = outline.definition(doc, convert.path_of(uri), at)
    if found is None:
        return None
    file, span = found
    if span is None:
        start = lsp.Position(line=0, character=0)
        return lsp.Location(uri=convert.uri_of(file), range=lsp.Range(start=start, end=start))
    source = doc.source if span.source == doc.source.name else _source_of(span.source)
    return lsp.Location(uri=convert.uri_of(file),
                        range=convert.range_of(span, {span.source: source},
                                               ls.encoding()))  # fmt: skip


def _source_of(path: str):
    from stackwise_dsl.source import Source

    try:
        with open(path, encoding="utf-8") as f:
            return Source(path, f.read())
    except (OSError, UnicodeDecodeError):
        return None


@server.feature(
    lsp.TEXT_DOCUMENT_CODE_ACTION,
    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]),
)
def code_actions(ls: SwServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    """A quick fix for each diagnostic in range that carries one (did you mean)."""
    out = []
    for d in params.context.diagnostics:
        word = d.data.get("replace") if isinstance(d.data, dict) else None
        if not isinstance(word, str):
            continue
        where = d.range
        if "range" in d.data:  # the misspelt word alone, as the server sent it
            where = _range_in(d.data["range"])
            if where is None:  # not a range the server sent: no fix
                continue
        edit = lsp.WorkspaceEdit(changes={params.text_document.uri: [
            lsp.TextEdit(range=where, new_text=word)]})  # fmt: skip
        out.append(lsp.CodeAction(title=f"Replace with `{word}`",
                                  kind=lsp.CodeActionKind.QuickFix, diagnostics=[d], edit=edit,
                                  is_preferred=True))  # fmt: skip
    return out


def _range_in(data) -> lsp.Range | None:
    """A range as the server wrote it into a diagnostic's `data`, or None if it is not one."""
    try:
        ends = [data["start"], data["end"]]
        points = [(e["line"], e["character"]) for e in ends]
    except (TypeError, KeyError):
        return None
    if not all(type(x) is int and 0 <= x < 2**31 for point in points for x in point):
        return None
    (a, b), (c, e) = points
    return lsp.Range(start=lsp.Position(line=a, character=b), end=lsp.Position(line=c, character=e))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: SwServer, params: lsp.HoverParams) -> lsp.Hover | None:
    """What the word under the cursor is (lsp/hover.py); sizes from the last check."""
    from stackwise_dsl.lsp.hover import hover as hover_text

    uri = params.text_document.uri
    here = _at_cursor(ls, params)
    if here is None:
        return None
    doc, text, at = here
    version, spec = ls.checked.get(uri, (None, None))
    if version != ls.latest.get(uri):  # sizes of another version would mislead
        spec = None
    said = hover_text(doc, text, at, spec, convert.path_of(uri))
    if said is None:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=said))


_ITEM_KINDS = {"field": lsp.CompletionItemKind.Field, "value": lsp.CompletionItemKind.EnumMember,
               "constructor": lsp.CompletionItemKind.Constructor,
               "keyword": lsp.CompletionItemKind.Keyword,
               "name": lsp.CompletionItemKind.Reference}  # fmt: skip


@server.feature(
    lsp.TEXT_DOCUMENT_COMPLETION,
    lsp.CompletionOptions(trigger_characters=["{", "(", "=", " ", ","]),
)
def completion(ls: SwServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    """The fields, values and names valid at the cursor (lsp/complete.py)."""
    from stackwise_dsl.lsp.complete import complete, defined_names

    here = _at_cursor(ls, params)
    if here is None:
        return lsp.CompletionList(is_incomplete=False, items=[])
    doc, text, at = here
    if doc is None:  # while it does not parse: the definitions that start a line
        names = defined_names(text)
    else:
        names = {
            s.name: s.kind for s in outline.outline(doc) if s.kind in ("let", "block", "stack")
        }
    before = text[:at]
    items = [
        lsp.CompletionItem(
            label=x.label, kind=_ITEM_KINDS[x.kind], detail=x.detail or None, insert_text=x.insert
        )
        for x in complete(before, names)
    ]
    return lsp.CompletionList(is_incomplete=False, items=items)


class _Framing:
    """Standard input as pygls reads it, with the framing checked first. A `Content-Length`
    that is not a number of at most MAX_MESSAGE bytes becomes a line pygls ignores (the
    message is dropped, said on stderr; pygls alone would try to read a terabyte), and a
    header glued to the end of an unframed body is split off, so the messages after a bad
    one are read again (pygls alone would stay deaf)."""

    MAX_MESSAGE = 64 << 20  # documents are checked up to 1 MiB; far more is not a message

    def __init__(self, raw) -> None:
        self.raw = raw
        self.pending = b""

    def readline(self) -> bytes:
        line, self.pending = (self.pending, b"") if self.pending else (self.raw.readline(), b"")
        glued = line.find(b"Content-Length:")
        if glued > 0:  # a body without a header of its own ran into the next header
            log.warning("sw lsp: dropped %d bytes outside any message", glued)
            self.pending = line[glued:]
            return b"X-Sw-Dropped: unframed\r\n"
        if line[:15].lower() == b"content-length:":
            value = line[15:].strip()
            # (a length of thousands of digits is refused before int() would refuse to read it)
            if not value.isdigit() or len(value) > 12 or int(value) > self.MAX_MESSAGE:
                log.warning("sw lsp: dropped a message whose Content-Length is %r",
                            value[:40].decode("ascii", "replace"))  # fmt: skip
                return b"X-Sw-Dropped: content length\r\n"
        return line

    def read(self, n: int) -> bytes:
        return self.raw.read(n)


def serve() -> None:
    """Serve over stdin and stdout until the client says exit. A check still running then
    (a huge spec) is abandoned: the process ends at once."""
    handler = logging.StreamHandler()
    if not os.environ.get("SW_LSP_DEBUG"):
        handler.setFormatter(_OneLine("%(message)s"))
    for name in ("pygls", "sw.lsp", "asyncio"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    with contextlib.suppress(SystemExit):
        server.start_io(_Framing(sys.stdin.buffer))
    # the protocol's rule: 0 after a shutdown request, 1 without one
    os._exit(0 if getattr(server.protocol, "_shutdown", False) else 1)


if __name__ == "__main__":  # pragma: no cover
    serve()
