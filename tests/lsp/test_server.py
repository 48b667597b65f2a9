"""`sw lsp` over real JSON-RPC: a subprocess spoken to as an editor speaks to it."""

from __future__ import annotations

import pytest

from stackwise_dsl.cli.formatting import format_text
from tests.conftest import ROOT
from tests.lsp.client import Client

TINY = (ROOT / "specs" / "tiny.sw").read_text()

SPEC = """let width = 64
include "shared.sw"
model { d_model = width, context = 32 }
block b { attention = mha(heads = 4), ffn = swiglu }
stack s = 1 x b
objective = mlm
grow append 2 x s {
  steps = 10
  stage 2 { steps = 5 }
}
data { source = synthetic(task = copy), batch = depth }
"""
SHARED = "let depth = 4\n"


def _range(line: int, start: int, end: int) -> dict:
    return {"start": {"line": line, "character": start}, "end": {"line": line, "character": end}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsp")
    client = Client(root)
    client.root = root
    capabilities = client.initialize(root)["capabilities"]
    client.capabilities = capabilities
    yield client
    assert client.close() == 0  # it shuts down cleanly, after everything the tests sent


def test_it_says_what_it_can_do(server):
    c = server.capabilities
    assert c["documentFormattingProvider"] and c["definitionProvider"] and c["hoverProvider"]
    assert c["completionProvider"]["triggerCharacters"] == ["{", "(", "=", " ", ","]
    assert c["documentSymbolProvider"] and c["codeActionProvider"]
    assert c["textDocumentSync"]["change"] == 2  # incremental


def test_diagnostics_as_you_type_with_a_quick_fix(server):
    path = server.root / "typo.sw"
    server.open(path, TINY)
    assert server.diagnostics(path, 1) == []
    # line 4 is `model { d_model = 32, context = 32 }`: misspell d_model, in place
    server.change(path, 2, "d_modle", where=_range(3, 8, 15))
    (found,) = server.diagnostics(path, 2)
    assert found == {
        "range": _range(3, 8, 15), "severity": 1, "code": "SW101", "source": "sw",
        "message": "unknown field `d_modle` in `model`\nhint: did you mean `d_model`?",
        "data": {"replace": "d_model", "range": _range(3, 8, 15)},
    }  # fmt: skip
    answer = server.request("textDocument/codeAction", {
        "textDocument": {"uri": path.as_uri()}, "range": found["range"],
        "context": {"diagnostics": [found]}})["result"]  # fmt: skip
    assert [(a["title"], a["kind"], a["edit"]) for a in answer] == [
        ("Replace with `d_model`", "quickfix",
         {"changes": {path.as_uri(): [{"range": _range(3, 8, 15), "newText": "d_model"}]}}),
    ]  # fmt: skip


def test_notes_are_related_information(server):
    path = server.root / "notes.sw"
    server.open(path, TINY.replace("batch = 8", "batch = 8, seq_len = 64"))
    (found,) = server.diagnostics(path, 1)
    assert found["code"] == "SW207"
    assert found["message"].startswith("seq_len (64) is longer than the model's context (32)")
    (related,) = found["relatedInformation"]
    assert related["message"] == "context is set here"
    assert related["location"] == {"uri": path.as_uri(), "range": _range(3, 32, 34)}


def test_definitions_of_names_and_of_included_files(server):
    path, shared = server.root / "main.sw", server.root / "shared.sw"
    shared.write_text(SHARED)
    server.open(path, SPEC)
    assert server.diagnostics(path, 1) == []

    def where(line: int, character: int) -> tuple[str, dict] | None:
        answer = server.at("textDocument/definition", path, line, character)["result"]
        return None if answer is None else (answer["uri"], answer["range"])

    assert where(2, 19) == (path.as_uri(), _range(0, 4, 9))  # width -> its let
    assert where(4, 14) == (path.as_uri(), _range(3, 6, 7))  # b -> the block
    assert where(6, 16) == (path.as_uri(), _range(4, 6, 7))  # s -> the stack
    assert where(10, 50) == (shared.as_uri(), _range(0, 4, 9))  # depth -> the included let
    assert where(1, 12) == (shared.as_uri(), _range(0, 0, 0))  # the include's path
    assert where(5, 2) is None  # a keyword-like field name defines nothing


def test_document_symbols(server):
    path = server.root / "main.sw"
    answer = server.request("textDocument/documentSymbol",
                            {"textDocument": {"uri": path.as_uri()}})["result"]  # fmt: skip
    assert [(s["name"], s["kind"]) for s in answer] == [
        ("width", 14), ("shared.sw", 1), ("model", 3), ("b", 5), ("s", 23), ("objective", 3),
        ("grow", 24), ("data", 3),
    ]  # fmt: skip
    grow = answer[6]
    assert grow["detail"] == "append 2 x s"
    assert [(s["name"], s["kind"]) for s in grow["children"]] == [("stage 2", 6)]


def test_formatting_is_sw_fmt(server):
    path = server.root / "messy.sw"
    messy = TINY.replace("model { d_model = 32, context = 32 }", "model {d_model=32,context=32}")
    assert messy != TINY
    server.open(path, messy)
    server.diagnostics(path, 1)
    (edit,) = server.request("textDocument/formatting", {
        "textDocument": {"uri": path.as_uri()},
        "options": {"tabSize": 2, "insertSpaces": True}})["result"]  # fmt: skip
    assert edit["newText"] == format_text(messy, str(path)).formatted == TINY
    assert edit["range"]["start"] == {"line": 0, "character": 0}


def test_bad_input_is_answered_and_the_server_keeps_running(server):
    path = server.root / "broken.sw"
    server.open(path, "model { d_model = \n")
    (found,) = server.diagnostics(path, 1)
    assert found["code"] == "SW001" and found["severity"] == 1
    formatted = server.request("textDocument/formatting", {
        "textDocument": {"uri": path.as_uri()},
        "options": {"tabSize": 2, "insertSpaces": True}})  # fmt: skip
    assert formatted["result"] == []  # nothing to format until it parses
    missing = server.root / "includes.sw"
    server.open(missing, 'include "nowhere.sw"\n' + TINY)
    codes = [d["code"] for d in server.diagnostics(missing, 1)]
    assert codes == ["SW004"]
    never = server.root / "never-opened.sw"  # not open, not on disk
    assert server.at("textDocument/definition", never, 0, 0)["result"] is None
    assert server.request("textDocument/documentSymbol",
                          {"textDocument": {"uri": never.as_uri()}})["result"] == []  # fmt: skip
    unknown = server.request("sw/noSuchMethod", {})
    assert unknown["error"]["code"] == -32601  # method not found
    server.open(path, TINY, version=2)  # still answering
    assert server.diagnostics(path, 2) == []


def test_a_newer_edit_wins(server):
    path = server.root / "fast.sw"
    server.open(path, TINY)
    server.diagnostics(path, 1)
    for version in range(2, 12):  # typing: each edit before the last one's check ends
        server.change(path, version, TINY.replace("d_model = 32", f"d_model = {30 + version}"))
    server.change(path, 12, TINY.replace("d_model", "d_modle"))
    (last,) = server.diagnostics(path, 12)
    assert last["code"] == "SW101"
    stale = [m for m in server.pending if m.get("method") == "textDocument/publishDiagnostics"
             and m["params"]["uri"] == path.as_uri()]  # fmt: skip
    assert all(m["params"]["version"] < 12 for m in stale)


def _hover(server, path, line: int, character: int) -> str | None:
    answer = server.at("textDocument/hover", path, line, character)["result"]
    return None if answer is None else answer["contents"]["value"]


def test_hover_says_what_a_word_is_and_what_the_spec_computes(server):
    path = server.root / "main.sw"  # opened (and checked clean) by the definitions test
    assert _hover(server, path, 2, 9) == "**d_model** (`model`): width of the residual stream"
    assert _hover(server, path, 2, 19) == "```sw\nlet width = 64\n```"
    assert _hover(server, path, 3, 6) == "**block b**: 53,376 parameters"
    assert _hover(server, path, 4, 6) == (
        "**stack s**: 53,376 parameters (1 block); in the rack at position 0, 1\n"
        "- stage 1: 0: new, fp32, 208.5 KiB, trains full\n"
        "- stage 2: 0: trunk, fp32, 208.5 KiB, trains nothing; 1: new, fp32, 208.5 KiB, "
        "trains full"
    )
    assert (
        _hover(server, path, 8, 4) == "**stage 2** (grow, 5 steps): 69,952 of 123,328 weights train"
    )
    assert _hover(server, path, 6, 1).startswith("**grow**: the growth schedule")
    assert _hover(server, path, 5, 13) == "`mlm`: a value of `objective` (what is trained)"
    assert (
        _hover(server, path, 3, 22) == "**mha**(...): multi-head attention; takes `heads`, `mode`"
    )
    lets = server.root / "lets.sw"
    server.open(lets, "let d = 64\nlet wide = d * 4 // 2\nmodel { d_model = \n")  # no parse
    server.diagnostics(lets, 1)
    assert _hover(server, lets, 2, 9) == "**d_model** (`model`): width of the residual stream"
    server.change(lets, 2, "let d = 64\nlet wide = d * 4 // 2\n")
    server.diagnostics(lets, 2)
    assert _hover(server, lets, 1, 5) == "```sw\nlet wide = d * 4 // 2  (= 128)\n```"


def _completions(server, path, text: str) -> list[str]:
    lines = text.split("\n")
    answer = server.at("textDocument/completion", path, len(lines) - 1, len(lines[-1]))
    return [item["label"] for item in answer["result"]["items"]]


def test_completion_offers_what_fits_at_the_cursor(server):
    path = server.root / "typing.sw"
    head = "block b { attention = mha(heads = 4), ffn = swiglu }\nstack s = 1 x b\n"
    cases = {
        "model { ": ["d_model", "context", "vocab", "embed_dim", "norm", "position", "head",
                     "dropout", "pretrained", "embedding"],
        "model { d_model = 64, norm = ": ["rmsnorm", "layernorm"],
        "stack t = 2 x ": ["b"],
        "grow append 2 x ": ["s"],
        "grow append 2 x s { trunk { ": ["strategy", "precision", "lora", "frozen", "adapters",
                                         "full"],
        "block c { attention = mha(heads = 4, mode = ": ["bidirectional", "causal"],
        "objective = ": ["mlm", "clm", "masked_diffusion"],
    }  # fmt: skip
    for version, (typed, expected) in enumerate(cases.items(), start=1):
        text = head + typed  # none of these parse: completion reads the text before the cursor
        if version == 1:
            server.open(path, text)
        else:
            server.change(path, version, text)
        assert _completions(server, path, text) == expected, typed
    assert _completions(server, path, "")[:3] == ["model", "block", "stack"]


@pytest.mark.parametrize(("encoding", "column"), [(None, 28), ("utf-8", 30), ("utf-32", 27)])
def test_columns_are_in_the_agreed_encoding(tmp_path, encoding, column):
    """A line with a character beyond the BMP before the problem: 2 UTF-16 units, 4 bytes,
    1 code point."""
    client = Client(tmp_path)
    try:
        wanted = {"general": {"positionEncodings": [encoding]}} if encoding else None
        agreed = client.initialize(tmp_path, wanted)["capabilities"]["positionEncoding"]
        assert agreed == (encoding or "utf-16")
        path = tmp_path / "emoji.sw"
        text = TINY.replace("run { seed = 0,", 'run { dir = "\U0001f600", seed = 0, sead = 1,')
        client.open(path, text)
        (found,) = client.diagnostics(path, 1)
        line = next(i for i, x in enumerate(text.split("\n")) if x.startswith("run {"))
        assert found["code"] == "SW101"
        assert found["range"] == _range(line, column, column + 4)
        hover = client.at("textDocument/hover", path, line, column - 9)["result"]  # on `seed`
        assert hover["contents"]["value"].startswith("**seed** (`run`)")
    finally:
        client.close()


def test_tester_findings(server):
    """What an independent tester found: a quick fix of a misspelt call keeps its arguments;
    nothing is offered or explained inside comments and strings; a block offers no `name`;
    sizes of an older version are not shown; a document over 1 MiB is refused as sw check
    refuses it."""
    path = server.root / "calls.sw"
    text = TINY.replace("adamw(lr = 3e-3", "adamm(lr = 3e-3")
    server.open(path, text)
    (found,) = server.diagnostics(path, 1)
    line = text.split("\n").index("optimizer = adamm(lr = 3e-3, warmup = 10)")
    (action,) = server.request("textDocument/codeAction", {
        "textDocument": {"uri": path.as_uri()}, "range": found["range"],
        "context": {"diagnostics": [found]}})["result"]  # fmt: skip
    assert action["edit"]["changes"][path.as_uri()] == [
        {"range": _range(line, 12, 17), "newText": "adamw"}
    ]
    comment = 0  # the first line of tiny.sw is a comment, mentioning "stacks"
    assert server.at("textDocument/hover", path, comment, 40)["result"] is None
    items = server.at("textDocument/completion", path, comment, 40)["result"]["items"]
    assert items == []
    typing = server.root / "block.sw"
    server.open(typing, "block b { ")
    labels = [
        i["label"] for i in server.at("textDocument/completion", typing, 0, 10)["result"]["items"]
    ]
    assert "name" not in labels and labels[:2] == ["attention", "ffn"]
    # stage sizes from a clean version, then an error: no sizes for the broken text
    sizes = server.root / "sizes.sw"
    server.open(sizes, SPEC.replace('include "shared.sw"\n', "let depth = 4\n"))
    assert server.diagnostics(sizes, 1) == []
    assert "weights train" in _hover(server, sizes, 8, 4)
    server.change(sizes, 2, "d_modle", where=_range(2, 8, 15))
    assert [d["code"] for d in server.diagnostics(sizes, 2)] == ["SW101"]
    assert (
        _hover(server, sizes, 8, 4)
        == "**stage**: settings of some growth stages: `stage 2 { ... }` or `stage 2..3 { ... }`"
    )
    huge = server.root / "huge.sw"
    server.open(huge, TINY + "#" * (1 << 20) + "\n")
    (too_big,) = server.diagnostics(huge, 1)
    assert (
        too_big["code"] == "SW004"
        and "spec files are read up to 1,048,576 bytes" in too_big["message"]
    )


def test_exit_ends_the_server_even_during_a_long_check(tmp_path):
    client = Client(tmp_path)
    client.initialize(tmp_path)
    path = tmp_path / "long.sw"
    client.open(path, TINY + "".join(f"let v{i} = {i}\n" for i in range(3000)))
    client.request("shutdown", timeout=10)  # while the check runs
    client.notify("exit", {})
    assert client.process.wait(timeout=10) == 0
    # without shutdown: exit code 1, and no traceback of the abandoned check
    client = Client(tmp_path)
    client.initialize(tmp_path)
    client.open(path, TINY + "".join(f"let v{i} = {i}\n" for i in range(4000)))
    client.notify("exit", {})
    assert client.process.wait(timeout=10) == 1
    assert b"Traceback" not in b"".join(client.stderr)


def _fix_of(server, path, found) -> list[dict]:
    (action,) = server.request("textDocument/codeAction", {
        "textDocument": {"uri": path.as_uri()}, "range": found["range"],
        "context": {"diagnostics": [found]}})["result"]  # fmt: skip
    return action["edit"]["changes"][path.as_uri()]


def test_second_tester_findings(server):
    """A request whose parameters do not fit the protocol is answered (-32602), a notification
    that does not fit is dropped, and the server goes on; a misspelt cadence is fixed to its
    word (`lg` -> `log`, not `log_every`); `mah` means `mha`; `2K` is `2k`; a problem in an
    included file is shown on the include that leads to it, pointing there; a CRLF document
    stays CRLF when formatted."""
    bad = server.request("textDocument/hover", {"textDocument": {}, "position": {"line": "x"}})
    assert bad["error"]["code"] == -32602
    assert "textDocument/hover" in bad["error"]["message"]
    assert "$.params.position.line" in bad["error"]["message"]
    server.notify("textDocument/didChange", {"textDocument": 3})  # dropped, with one line
    path = server.root / "typos.sw"
    text = (TINY.replace("log every", "lg every").replace("mha(", "mah(")
            .replace("steps = 150", "steps = 2K"))  # fmt: skip
    lines = text.split("\n")
    server.open(path, text)
    (number,) = server.diagnostics(path, 1)  # a syntax error stops the rest
    row = next(i for i, x in enumerate(lines) if "2K" in x)
    column = lines[row].index("2K")
    assert number["code"] == "SW001" and number["range"] == _range(row, column, column + 2)
    assert _fix_of(server, path, number) == [
        {"range": _range(row, column, column + 2), "newText": "2k"}
    ]
    server.change(path, 2, text.replace("2K", "150"))
    found = {d["code"]: d for d in server.diagnostics(path, 2)}
    cadence, kind = found["SW101"], found["SW105"]
    row = next(i for i, x in enumerate(lines) if "lg every" in x)
    column = lines[row].index("lg every")
    assert (
        cadence["message"] == "unknown cadence `lg every` in `run`\nhint: did you mean `log every`?"
    )
    assert _fix_of(server, path, cadence) == [
        {"range": _range(row, column, column + 2), "newText": "log"}
    ]
    row = next(i for i, x in enumerate(lines) if "mah(" in x)
    column = lines[row].index("mah(")
    assert _fix_of(server, path, kind) == [
        {"range": _range(row, column, column + 3), "newText": "mha"}
    ]
    # a problem two includes away: on this document's include, with the place as related
    (server.root / "inner.sw").write_text("let unused = 3\n")
    (server.root / "outer.sw").write_text('include "inner.sw"\n')
    including = server.root / "including.sw"
    server.open(including, '# shared settings\ninclude "outer.sw"\n' + TINY)
    (far,) = server.diagnostics(including, 1)
    assert far["code"] == "SW107" and far["range"] == _range(1, 8, 18)
    assert far["message"].startswith(f"{server.root / 'inner.sw'}:1:5: let `unused`")
    (there,) = far["relatedInformation"]
    assert there["location"] == {
        "uri": (server.root / "inner.sw").as_uri(),
        "range": _range(0, 4, 10),
    }
    crlf = server.root / "crlf.sw"
    messy = TINY.replace("seed = 0", "seed   =   0").replace("\n", "\r\n")
    server.open(crlf, messy)
    (edit,) = server.request("textDocument/formatting", {
        "textDocument": {"uri": crlf.as_uri()},
        "options": {"tabSize": 2, "insertSpaces": True}})["result"]  # fmt: skip
    assert edit["newText"] == TINY.replace("\n", "\r\n")
    assert server.process.poll() is None  # still serving


def _raw(server, body: bytes) -> None:
    server.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    server.process.stdin.flush()


def test_messages_that_are_not_requests_are_answered_or_dropped_quietly(tmp_path):
    """Not JSON: -32700; JSON that is not a JSON-RPC request: -32600 where it has an id,
    else dropped with one line; a request after `shutdown`: -32600; a FIFO or a device named
    by a request is not read; no traceback on stderr, no pop-up."""
    import os

    client = Client(tmp_path)
    client.initialize(tmp_path)
    try:
        fifo = tmp_path / "fifo.sw"
        os.mkfifo(fifo)
        assert client.at("textDocument/hover", fifo, 0, 0)["result"] is None  # not read
        zero = client.request(
            "textDocument/hover",
            {"textDocument": {"uri": "file:///dev/zero"}, "position": {"line": 0, "character": 0}},
        )
        assert zero["result"] is None
        _raw(client, b"notjs")
        parse = client._wait(lambda m: "error" in m, 10)
        assert parse["error"]["code"] == -32700 and parse["id"] is None
        for body in (b"[]", b"{}", b'{"jsonrpc":1}'):  # invalid requests, answered to id null
            _raw(client, body)
            invalid = client._wait(lambda m: "error" in m, 10)
            assert invalid["error"]["code"] == -32600 and invalid["id"] is None
        _raw(client, b'{"jsonrpc":"2.0","id":78,"method":5,"params":{}}')
        _raw(client, b'{"jsonrpc":"2.0","id":79,"method":"$/cancelRequest","params":{"id":9}}')
        for ident in (78, 79):
            answer = client._wait(lambda m, i=ident: m.get("id") == i, 10)
            assert answer["error"]["code"] == -32600
        never = (tmp_path / "never.sw").as_uri()
        client.notify("textDocument/didChange", {"textDocument": {"uri": never, "version": 2},
                                                 "contentChanges": [{"text": "x"}]})  # fmt: skip
        bad = client.request(
            "textDocument/codeAction",
            {
                "textDocument": {"uri": never},
                "range": _range(0, 0, 0),
                "context": {
                    "diagnostics": [
                        {
                            "range": _range(0, 0, 0),
                            "message": "m",
                            "data": {"replace": "a", "range": {"start": 1}},
                        }
                    ]
                },
            },
        )
        assert bad["result"] == []  # data the server did not write: no fix, no error
        assert client.request("shutdown")["result"] is None
        late = client.at("textDocument/hover", fifo, 0, 0)
        assert late["error"]["code"] == -32600
        popups = [m for m in client.pending if m.get("method") == "window/showMessage"]
        assert popups == []
    finally:
        client.notify("exit", {})
        assert client.process.wait(timeout=10) == 0
    said = b"".join(client.stderr).decode()
    assert "Traceback" not in said
    assert f"dropped textDocument/didChange for {never}, which is not open" in said
    assert "refused a message: `method` must be a string" in said


def test_names_from_included_files_long_lets_and_what_completion_leaves_out(server):
    """Hover shows a let's value and a block's size where they are defined in an included
    file; a let of 1,000 terms neither breaks hover nor definition; completion leaves out
    the let being defined and the fields already given, and offers cadences as written."""
    base = server.root / "base3.sw"
    base.write_text("let d = 32\nlet e = d * 2\n"
                    "block b { attention = mha(heads = 2, mode = causal), ffn = swiglu(hidden = 64) }\n")  # fmt: skip
    path = server.root / "uses3.sw"
    text = ('include "base3.sw"\nmodel { d_model = d, context = 32 }\nstack s = 1 x b\n'
            "objective = clm\ngrow append 2 x s { steps = 10 }\n"
            "data { source = synthetic(task = copy), batch = 4 }\n"
            "optimizer = adamw(lr = 3e-3)\nrun { log every e steps }\n")  # fmt: skip
    server.open(path, text)
    assert server.diagnostics(path, 1) == []
    assert "let e = d * 2  (= 64)" in _hover(server, path, 7, 16)
    assert _hover(server, path, 2, 14).startswith("**block b**: ")  # the included block
    assert "parameters" in _hover(server, path, 2, 14)
    assert _hover(server, path, 7, 7).startswith("**log_every** (`run`): how often")
    assert _hover(server, path, 7, 20).startswith("**steps**: the unit of a cadence")
    long = server.root / "long3.sw"
    terms = " + ".join(["1"] * 1000)
    server.open(long, f"let big = {terms}\n" + TINY.replace("steps = 150", "steps = big"))
    assert server.diagnostics(long, 1) == []
    assert "**model**" in _hover(server, long, 4, 2)
    assert server.at("textDocument/definition", long, 12, 28)["result"]["range"] == _range(0, 4, 7)
    typing = server.root / "typing3.sw"
    server.open(typing, "let q = \nmodel { d_model = 3, \nrun { log every 5 \n")

    def labels(line: int, character: int) -> list[str]:
        items = server.at("textDocument/completion", typing, line, character)["result"]["items"]
        return [i["label"] for i in items]

    assert "q" not in labels(0, 8)
    assert "d_model" not in labels(1, 21) and "context" in labels(1, 21)
    assert labels(2, 18) == ["steps"]
    assert {"log every", "eval every", "checkpoint every"} <= set(labels(2, 6))
    assert "log_every" not in labels(2, 6)


def test_a_buffer_that_includes_its_own_file_is_a_cycle(server):
    """The unsaved text stands for its file: including that file is SW005, as it is once
    saved, and the cycle is named from the document's side."""
    own = server.root / "self3.sw"
    own.write_text("let a = 1\n")
    server.open(own, 'include "self3.sw"\n\n\nlet a = 1\n')
    codes = [(d["code"], d["range"]) for d in server.diagnostics(own, 1)]
    assert codes == [("SW005", _range(0, 8, 18))]


def test_bad_framing_drops_one_message_and_the_next_are_read(tmp_path):
    """A Content-Length too large to be a message, one that is not a number, and a body with
    no header of its own: each is dropped with a line on stderr, and the requests after it
    are answered (pygls alone tried to read a terabyte, or stayed deaf)."""
    client = Client(tmp_path)
    client.initialize(tmp_path)
    uri = (tmp_path / "a.sw").as_uri()
    try:
        for bad in (b"Content-Length: 999999999999\r\n\r\n{}", b"Content-Length: abc\r\n\r\n{}",
                    b"Content-Length: -5\r\n\r\n{}", b"X-Other: 1\r\n\r\n{}",
                    b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n{}"):  # fmt: skip
            client.process.stdin.write(bad)  # as it is, without a frame of its own
            client.process.stdin.flush()
            symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
            assert symbols["result"] == []
    finally:
        assert client.close() == 0
    said = b"".join(client.stderr).decode()
    assert "dropped a message whose Content-Length is '999999999999'" in said
    assert "dropped a message whose Content-Length is 'abc'" in said
    assert "Traceback" not in said


def test_completion_after_cadences_flags_and_sections(server):
    path = server.root / "typing4.sw"
    lines = ["run { seed = 0, log every 5 s", "run { log ", "grow append 2 x s { trunk { frozen, ",
             "grow append 2 x s { steps = 5, "]  # fmt: skip
    server.open(path, "\n".join(lines) + "\n")

    def items(line: int) -> dict[str, str]:
        found = server.at("textDocument/completion", path, line, len(lines[line]))
        return {i["label"]: i.get("insertText") for i in found["result"]["items"]}

    assert list(items(0)) == ["steps"]
    assert items(1) == {"every": "every "}
    assert set(items(2)) == {"precision", "lora"}  # `strategy` is given by `frozen`
    sections = items(3)
    assert sections["trunk"] == "trunk { " and sections["new"] == "new { "
    assert sections["tokens"] == "tokens = " and "steps" not in sections
