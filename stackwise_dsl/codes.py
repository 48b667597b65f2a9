"""Every diagnostic code: what it means, an example that triggers it, and how to fix it.

docs/diagnostics.md and `sw explain CODE` are generated from this table, and a test runs
every example through the front end and expects exactly its code.
"""

from __future__ import annotations

import attrs

from stackwise_dsl.diagnostics import Severity
from stackwise_dsl.hf.read import Pretrained
from stackwise_dsl.machine.host import (
    CPU_ONLY,
    DataFile,
    FileKind,
    Host,
    PretrainedDir,
    Record,
    TokenizerFacts,
)


@attrs.frozen(kw_only=True)
class Code:
    code: str
    severity: Severity
    title: str
    explanation: str
    example: str
    fix: str
    overrides: tuple[str, ...] = ()
    also: tuple[str, ...] = ()  # other codes the example rightly produces too
    host: Host = CPU_ONLY  # the machine the example is checked as if on
    # a warning about this machine that `sw run` refuses to start with (the others are facts
    # the run can get past, such as `--device cpu` for SW603)
    run_refuses: bool = False


_BASE = """model { d_model = 64, context = 32 }
block b { attention = mha(heads = 4), ffn = swiglu }
stack s = 1 x b
objective = mlm
grow append 2 x s { steps = 10 }
"""


def _with(old: str, new: str) -> str:
    """The base example with one line changed."""
    if old not in _BASE:
        raise ValueError(f"example base has no {old!r}")
    return _BASE.replace(old, new)


E, W = Severity.ERROR, Severity.WARNING

# a tiny Llama, as hf/read.py would read it: the examples of the pretrained codes
_LLAMA = Pretrained(path="tiny-llama", family="llama", vocab=257, d_model=64, layers=4,
                    heads=4, kv_heads=2, head_dim=16, hidden=160, context=64, theta=10000.0,
                    tied=False, eos=256, tensors={})  # fmt: skip
_PRETRAINED = """model {
  d_model = 64, context = 64, vocab = 257, head = untied, pretrained = hf("tiny-llama")
}
block layer { attention = gqa(heads = 4, kv_heads = 2, mode = causal), ffn = swiglu(hidden = 160) }
stack s = 2 x layer
objective = clm
grow append 2 x s { steps = 10, init = identity, stage 1 { init = pretrained } }
"""


_UNUSABLE = "tiny-llama cannot be used:\n  - config.json: hidden_act 'gelu': SwiGLU uses silu"


def _on(model: Pretrained | None = _LLAMA, **fact) -> Host:
    """A machine where `hf("tiny-llama")` holds `model` (or is as `fact` says)."""
    return Host(cuda=False, data=(), pretrained=PretrainedDir(written="tiny-llama", model=model,
                                                              **fact))  # fmt: skip


CODES: dict[str, Code] = {
    c.code: c
    for c in (
        Code(
            code="SW001", severity=E, title="syntax error",
            explanation="The parser met a token it did not expect; the message says what it "
            "expected instead. Every syntax error in the file is reported.",
            example=_with("d_model = 64, context = 32", "d_model = 64, context = "),
            fix="Complete or remove the item at the caret.",
        ),
        Code(
            code="SW002", severity=E, title="unexpected character",
            explanation="A character that cannot start any token, such as `:` or `;`, an "
            "unterminated string, or a carriage return that ends a line alone (classic Mac "
            "line ends: save the file with LF or CRLF).",
            example=_with("d_model = 64", "d_model: 64"),
            fix="Set fields with `=`; separate items with newlines or commas.",
        ),
        Code(
            code="SW003", severity=E, title="invalid escape in a string",
            explanation="Strings accept the escapes \\\\ \\\" \\n \\t \\r \\0 \\uXXXX and "
            "\\UXXXXXXXX. A \\u or \\U escape names one character: not a UTF-16 surrogate "
            "(D800 to DFFF, which JSON pairs up) and nothing past 10FFFF.",
            example=_BASE + 'data { source = text("C:\\data\\train.txt") }\n',
            fix="Double the backslash (`\\\\`) or use forward slashes.",
        ),
        Code(
            code="SW004", severity=E, title="file cannot be read",
            explanation="A spec, or a file it includes or extends, does not exist, is a "
            "directory, a device, a FIFO or a socket, is a loop of symbolic links, is larger "
            "than 1 MiB, is not UTF-8 or cannot be read.",
            example='include "no/such/file.sw"\n' + _BASE,
            fix="Fix the path; `include` and `extends` paths are relative to the file that "
            "names them.",
        ),
        Code(
            code="SW005", severity=E, title="include cycle",
            explanation="A file includes or extends itself, directly or through other files.",
            example='include "example.sw"  # this file is example.sw\n' + _BASE,
            fix="Remove the include that leads back; put shared parts in a third file.",
        ),
        Code(
            code="SW006", severity=E, title="malformed --set",
            explanation="A command-line override is not `PATH=VALUE`, or its path runs into a "
            "plain value, names a block or a stage without a field, or a stage by something "
            "other than a number or a range, or has more than 32 parts. A stage number below 1 "
            "is SW104 and a backwards range SW109, as in a file; a bad literal in the value is "
            "its own code, as in a file (SW003, SW007).",
            example=_BASE,
            overrides=("model.d_model",),
            fix="Write `--set model.d_model=512`, `--set d=512` for a let, or "
            "`--set grow.stage.2.steps=500`.",
        ),
        Code(
            code="SW007", severity=E, title="limit exceeded",
            explanation="Elaboration has limits, so that no spec can hang `sw check` or exhaust "
            "its memory: include and extends chains of at most 32 files, lets nested at most "
            "100 deep, computed strings of at most 65,536 characters and integers, written or "
            "computed, of at most 10^18. (Files over 1 MiB, devices and FIFOs are SW004; "
            "sequences of more than 100,000 names are SW109.)",
            example='let s0 = "0123456789abcdef"\n'
            + "".join(f"let s{i + 1} = s{i} + s{i}\n" for i in range(13))
            + _BASE.replace("grow append", 'run { dir = s13 }\ngrow append'),
            fix="Compute the value from fewer steps, or write it out; flatten deep include "
            "chains by including the shared files from one spec.",
        ),
        Code(
            code="SW101", severity=E, title="unknown field",
            explanation="A section, call or the spec itself has no field of that name. The "
            "hint names the closest field, or lists them all.",
            example=_with("context = 32", "contxt = 32"),
            fix="Use one of the listed fields (docs/language.md has them all).",
        ),
        Code(
            code="SW102", severity=E, title="given twice",
            explanation="A field, definition or let is set twice in one place, or by two "
            "included files. Only `extends` and `--set` may change a value set elsewhere.",
            example=_with("{ steps = 10 }", "{ steps = 10, steps = 20 }"),
            fix="Keep one of them.",
        ),
        Code(
            code="SW103", severity=E, title="missing field",
            explanation="A required field or part is absent: a model needs d_model and "
            "context, a spec needs a model, an objective and a growth.",
            example=_with("model { d_model = 64, context = 32 }", "model { d_model = 64 }"),
            fix="Add the named field.",
        ),
        Code(
            code="SW104", severity=E, title="wrong type",
            explanation="A value of the wrong kind: a string where a number goes, a fraction "
            "where a whole number goes, a value where a section goes, a path (a data file, "
            "the tokenizer file, the run folder) holding a NUL character, which no file name "
            "can.",
            example=_with("d_model = 64", 'd_model = "64"'),
            fix="Write the value in the expected kind; `//` divides to a whole number.",
        ),
        Code(
            code="SW105", severity=E, title="unknown value",
            explanation="A word that is not one of the allowed values or constructors of "
            "that field.",
            example=_with("context = 32 }", "context = 32, norm = batchnorm }"),
            fix="Use one of the listed values.",
        ),
        Code(
            code="SW106", severity=E, title="undefined name",
            explanation="A name that no `let`, block or stack defines.",
            example=_with("d_model = 64", "d_model = width"),
            fix="Define it (`let width = 64`) or fix the spelling.",
        ),
        Code(
            code="SW107", severity=W, title="unused definition",
            explanation="A let, block or stack that nothing uses; often a typo elsewhere.",
            example="let width = 128\n" + _BASE,
            fix="Use it or remove it.",
        ),
        Code(
            code="SW108", severity=E, title="let cycle",
            explanation="Lets that are defined in terms of each other.",
            example="let a = b * 2\nlet b = a // 2\n" + _with("d_model = 64", "d_model = a"),
            fix="Define one of them from a number.",
        ),
        Code(
            code="SW109", severity=E, title="invalid expression",
            explanation="Arithmetic that cannot be done: division by zero, a non-finite "
            "result, `x` with a count that is not a whole number, or arithmetic on words.",
            example=_with("d_model = 64", "d_model = 64 / 0"),
            fix="Fix the expression; `n x name` repeats a block or stack name.",
        ),
        Code(
            code="SW110", severity=E, title="misplaced stage",
            explanation="`stage N { ... }` overrides belong inside `grow { ... }`.",
            example=_BASE + "fuse { steps = 5, stage 1 { steps = 2 } }\n",
            fix="Move the stage override into the growth.",
        ),
        Code(
            code="SW111", severity=E, title="unnamed argument",
            explanation="Most calls take named arguments only; the few that take one unnamed "
            "argument (schedules, file names) take exactly one.",
            example=_with("context = 32 }", "context = 32, position = rope(10000) }"),
            fix="Name the argument: `rope(theta = 10000)`.",
        ),
        Code(
            code="SW201", severity=E, title="heads do not divide d_model",
            explanation="Each head gets d_model / heads dimensions, so heads must divide "
            "d_model.",
            example=_with("mha(heads = 4)", "mha(heads = 5)"),
            fix="Pick heads from the listed divisors.",
        ),
        Code(
            code="SW202", severity=E, title="kv_heads do not divide heads",
            explanation="In grouped-query attention each key/value head serves an equal "
            "group of query heads.",
            example=_with("mha(heads = 4)", "gqa(heads = 4, kv_heads = 3)"),
            fix="Pick kv_heads from the listed divisors of heads (1 is MQA).",
        ),
        Code(
            code="SW203", severity=E, title="odd head dimension with rope",
            explanation="Rope rotates pairs of dimensions, so d_model / heads must be even.",
            example=_with("d_model = 64", "d_model = 60"),
            fix="Change heads or d_model, or use `position = learned`.",
        ),
        Code(
            code="SW204", severity=E, title="latent rank not a bottleneck",
            explanation="MLA compresses queries and keys/values through ranks that must be "
            "at least 1 and below d_model.",
            example=_with("mha(heads = 4)", "mla(heads = 4, q_rank = 64, kv_rank = 16)"),
            fix="Use ranks well below d_model, e.g. d_model / 2 and d_model / 4.",
        ),
        Code(
            code="SW205", severity=E, title="kernel_dim not positive",
            explanation="Kernel attention needs a positive number of random features.",
            example=_with(
                "mha(heads = 4)", "kernel(heads = 4, kernel = gaussian, kernel_dim = 0)"
            ),
            fix="Use a few times the head dimension, e.g. 64.",
        ),
        Code(
            code="SW206", severity=E, title="tied head with mismatched sizes",
            explanation="A tied head reuses the embedding matrix as its output layer, which "
            "only works when the embedding is d_model wide.",
            example=_with("context = 32 }", "context = 32, embed_dim = 32 }"),
            fix="Set `head = untied`, or drop `embed_dim`.",
        ),
        Code(
            code="SW207", severity=E, title="context shorter than the sequences",
            explanation="The data's seq_len must fit in the model's context.",
            example=_BASE + "data { seq_len = 64 }\n",
            fix="Lower seq_len or raise context.",
        ),
        Code(
            code="SW208", severity=E, title="vocabulary too small",
            explanation="An explicit vocab must hold every id the tokenizer produces, "
            "special tokens included. For a tokenizer file on this machine: its own ids, "
            "plus the special tokens the objective needs that it lacks (`<mask>` for masked "
            "objectives, `<eos>` when documents end with it), which the run adds at the end; "
            "a pretrained embedding has no row for those.",
            example=_with("context = 32 }", "context = 32, vocab = 100 }"),
            fix="Leave vocab out to take it from the tokenizer.",
        ),
        Code(
            code="SW209", severity=E, title="pretrained layers without a pretrained model",
            explanation="`init = pretrained` starts a stage's new stacks from the layers of "
            "the model's pretrained directory (`model { pretrained = hf(...) }`), which the "
            "model must name.",
            example=_with("steps = 10 }", "steps = 10, init = pretrained }"),
            fix='Name the directory: `model { ..., pretrained = hf("path/to/model") }`, or '
            "use another init.",
        ),
        Code(
            code="SW210", severity=E, title="pretrained directory cannot be used",
            explanation="The directory `model.pretrained` names is read as the run reads it, "
            "without reading its weights: config.json (a Llama or GPT-2, no RoPE scaling, our "
            "activations and norm epsilons, no biases) and the safetensors headers, every "
            "tensor's shape against the config (docs/huggingface.md). Each problem is a note.",
            example=_PRETRAINED,
            host=_on(None, problem=_UNUSABLE),
            fix="Point at a Llama or GPT-2 directory saved by transformers (`save_pretrained`) "
            "in safetensors, or convert the model first.",
        ),
        Code(
            code="SW211", severity=W, title="pretrained directory not on this machine",
            explanation="There is nothing at the path `model.pretrained` names. It may live "
            "on the machine that will train, so `sw check` warns; `sw run` refuses to start "
            "without it. The path is relative to the spec file, as for data files.",
            example=_PRETRAINED,
            host=_on(None, missing=True),
            fix="Fix the path, or give it with `--set model.pretrained.path=DIR`.",
            run_refuses=True,
        ),
        Code(
            code="SW212", severity=E, title="model unlike the pretrained model",
            explanation="A model that starts from a pretrained directory has its width, "
            "vocabulary, norm, positions (RoPE's theta for a Llama, learned for GPT-2), head "
            "(tied or not) and an embedding d_model wide; its context is at most the "
            "directory's. The spec states them, and `sw check` compares.",
            example=_PRETRAINED.replace("d_model = 64,", "d_model = 128,"),
            also=("SW213",),
            host=_on(),
            fix="Set what the hint says in `model { ... }`.",
        ),
        Code(
            code="SW213", severity=E, title="block unlike the pretrained layers",
            explanation="The blocks of the stacks made with `init = pretrained` take the "
            "directory's layers, so they must have its shape: dense attention with its heads "
            "and kv_heads (and so its head width), its feed-forward kind and width, no "
            "spectral norm.",
            example=_PRETRAINED.replace("hidden = 160", "hidden = 128"),
            host=_on(),
            fix="Write the block as the hint says.",
        ),
        Code(
            code="SW214", severity=E, title="more pretrained blocks than layers",
            explanation="The stacks made with `init = pretrained` take the directory's layers "
            "in rack order, input side first, one per block; they cannot take more than it has.",
            example=_PRETRAINED.replace("stack s = 2 x layer", "stack s = 6 x layer"),
            host=_on(),
            fix="Take fewer stacks from the directory, or grow the rest with `init = "
            "identity`, `copy` or `middle`.",
        ),
        Code(
            code="SW215", severity=E, title="a pretrained model and a pretrained embedding",
            explanation="`model.pretrained` starts the whole model from a directory, its "
            "embedding included (and trains it); `model.embedding` takes a directory's token "
            "embedding alone and keeps it frozen. A model names one or the other.",
            example=_PRETRAINED.replace('pretrained = hf("tiny-llama")',
                                        'pretrained = hf("tiny-llama"), '
                                        'embedding = hf("tiny-llama")'),
            host=_on(),
            fix="Remove `embedding`, or remove `pretrained` to take the embedding alone.",
        ),
        Code(
            code="SW216", severity=W, title="tokenizer not the pretrained directory's",
            explanation="A pretrained embedding's rows belong to the ids of the directory's "
            "tokenizer. When the directory holds a tokenizer.json and the data's tokenizer is "
            "another (a built-in one, or a different file), the ids mean other things; a "
            "run can still train, so `sw check` warns.",
            example=_PRETRAINED,
            host=_on(same_tokenizer=False),
            fix='Set `data { tokenizer = file("DIR/tokenizer.json") }`, with DIR the '
            "pretrained directory.",
        ),
        Code(
            code="SW301", severity=E, title="value out of range",
            explanation="Ratios lie in (0, 1], probabilities such as dropout in [0, 1), "
            "rates, sizes and steps above zero; a data source that reads files names at least "
            "one (`text([])` would have no data).",
            example=_with("objective = mlm", "objective = mlm(ratio = 1.5)"),
            fix="Use a value inside the stated range.",
        ),
        Code(
            code="SW401", severity=E, title="quantized weights that train",
            explanation="Quantized formats (int8, nf4, fp4, nvfp4) hold frozen weights only; "
            "adapters train on top of them (QLoRA). The new stack always trains, and so does "
            "a trunk with strategy `full`.",
            example=_with("{ steps = 10 }", "{ steps = 10, new { precision = nf4 } }"),
            fix="Quantize the frozen trunk instead, and train adapters on it.",
        ),
        Code(
            code="SW402", severity=W, title="fp16 without a GPU",
            explanation="fp16 training needs CUDA kernels and a loss scaler.",
            example=_with("{ steps = 10 }", "{ steps = 10, new { precision = fp16 } }")
            + "run { device = cpu }\n",
            fix="Use bf16 on the CPU.",
        ),
        Code(
            code="SW403", severity=E, title="stale activation cache",
            explanation="Caching a trunk's output is valid only for append growth with a "
            "frozen trunk whose input is the same every time a sample comes back: in prepend "
            "growth the new stack feeds the frozen suffix, a training trunk changes its own "
            "output, and time-as-input diffusion corrupts each batch at a random level.",
            example=_with("grow append 2 x s { steps = 10 }",
                          "grow prepend 2 x s { steps = 10, cache = memory }"),
            fix="Turn the cache off, or grow with append and a frozen trunk.",
        ),
        Code(
            code="SW404", severity=E, title="stage beyond the growth",
            explanation="A `stage N` override names a stage that does not exist: append and "
            "prepend have one stage per stack, end_to_end has one.",
            example=_with("{ steps = 10 }", "{ steps = 10, stage 3 { steps = 5 } }"),
            fix="Number stages from 1 to the number of stacks grown.",
        ),
        Code(
            code="SW405", severity=E, title="LoRA rank too large",
            explanation="A LoRA adapter's rank cannot exceed min(in, out) of the layer it "
            "wraps; patterns that grow the rank reach this quickly.",
            example=_with("{ steps = 10 }", "{ steps = 10, new { lora(rank = 100) } }"),
            fix="Lower the rank, or use a pattern or table that stays within the layer.",
        ),
        Code(
            code="SW406", severity=E, title="LoRA target without a layer",
            explanation="A LoRA target names a projection the block does not have: a gelu "
            "ffn has no gate.",
            example=_with("ffn = swiglu", "ffn = gelu").replace(
                "{ steps = 10 }", "{ steps = 10, new { lora(targets = [q, gate]) } }"
            ),
            fix="Remove the target.",
        ),
        Code(
            code="SW407", severity=E, title="stage length",
            explanation="Every stage states exactly one of `steps` or `tokens`; the fuse stage "
            "may state its `share` of all steps instead, which must be above 0.",
            example=_with("{ steps = 10 }", "{ init = random }"),
            fix="Add `steps = ...` (or `tokens = ...`, or for `fuse` `share = 0.1`), only one.",
        ),
        Code(
            code="SW408", severity=E, title="stage overridden twice",
            explanation="Two `stage` overrides cover the same stage.",
            example=_with("{ steps = 10 }",
                          "{ steps = 10, stage 1 { steps = 5 }, stage 1..2 { steps = 7 } }"),
            fix="Combine them into one, or make the ranges disjoint.",
        ),
        Code(
            code="SW409", severity=E, title="table length",
            explanation="An explicit LoRA rank or alpha table lists one value per stack, in "
            "creation order.",
            example=_with("{ steps = 10 }", "{ steps = 10, new { lora(rank = [4, 4, 4]) } }"),
            fix="List exactly one value per stack.",
        ),
        Code(
            code="SW410", severity=W, title="setting without effect",
            explanation="In end_to_end growth every stack is new: trunk, cache, init and top "
            "settings do nothing. In growth stage by stage, a `top` above the most stacks the "
            "trunk ever holds trains no more than the whole trunk.",
            example=_with("grow append 2 x s { steps = 10 }",
                          "grow end_to_end 2 x s { steps = 10, init = copy }"),
            fix="Remove the setting, or grow stage by stage.",
        ),
        Code(
            code="SW411", severity=E, title="copy init across shapes",
            explanation="`init = copy` starts a new stack from its neighbour in the trunk, "
            "which must have the same blocks.",
            example=_BASE.replace("stack s = 1 x b\n", "stack s = 1 x b\nblock c { attention "
                                  "= mha(heads = 2) }\nstack t = 1 x c\n").replace(
                "grow append 2 x s { steps = 10 }", "grow append s + t { steps = 10, init = copy }"
            ),
            fix="Use `init = random` or `init = identity` for that stage.",
        ),
        Code(
            code="SW412", severity=E, title="nothing to train",
            explanation="A trunk with strategy `adapters` needs adapters, and a fuse stage "
            "must train something.",
            example=_with("{ steps = 10 }", "{ steps = 10, trunk { adapters } }"),
            fix="Add `lora(...)` to the trunk or the new stack, or change the strategy.",
        ),
        Code(
            code="SW413", severity=E, title="empty growth",
            explanation="The growth adds no stacks.",
            example=_with("2 x s", "0 x s"),
            fix="Name at least one stack.",
            also=("SW107",),
        ),
        Code(
            code="SW414", severity=E, title="identity init with spectral norm",
            explanation="`init = identity` zeroes a new stack's output projections; a "
            "spectrally normalised layer divides by its largest singular value, which a zero "
            "matrix does not have.",
            example=_with("ffn = swiglu }", "ffn = swiglu, spectral_norm = true }").replace(
                "{ steps = 10 }", "{ steps = 10, init = identity }"
            ),
            fix="Start the stack randomly or as a copy, or drop `spectral_norm`.",
        ),
        Code(
            code="SW415", severity=W, title="bf16 on a CPU without native bf16",
            explanation="On a CPU without avx512_bf16 or AMX, bf16 matrix products are "
            "emulated: on the development VM a stage computing in bf16 ran 55 times slower "
            "than in fp32. The warning is for bf16 that trains (a new stack, or a trunk under "
            "`full`); a frozen bf16 trunk is stored in bf16 and computed in fp32 on such a "
            "CPU, so it is not slow. The warning depends on the machine `sw check` runs on; it "
            "is silent where that cannot be told.",
            example=_with("{ steps = 10 }", "{ steps = 10, new { precision = bf16 } }")
            + "run { device = cpu }\n",
            fix="Use fp32 on this machine; keep bf16 for GPUs and recent CPUs.",
            host=Host(cuda=False, cpu_bf16=False),
        ),
        Code(
            code="SW416", severity=E, title="merge with spectral norm",
            explanation="`fuse { merge = true }` adds each trained adapter's update to the "
            "plain weight it wraps. A spectrally normalised layer keeps its weight as a "
            "parametrization instead, and a normalised weight plus an update is not linear, so "
            "the merge would fail after every growth stage had trained. The error is given "
            "when a stack with `spectral_norm` blocks has adapters that train before the fuse "
            "stage (where it is trunk and the trunk is not frozen); adapters that never trained "
            "are zero and are not merged.",
            example=_with("ffn = swiglu }", "ffn = swiglu, spectral_norm = true }").replace(
                "{ steps = 10 }", "{ steps = 10, new { lora(rank = 4) }, trunk { adapters } }"
            ) + "fuse { steps = 5, merge = true }\n",
            fix="Drop `merge = true` (the fuse stage then trains with the adapters as they "
            "are), or drop `spectral_norm` from the blocks.",
        ),
        Code(
            code="SW417", severity=E, title="FSDP with 8-bit AdamW",
            explanation="`run { distributed = fsdp }` shards every weight, its gradient and "
            "its optimizer state across the processes, and gathers them whole for a "
            "checkpoint. bitsandbytes' 8-bit AdamW keeps its state quantized in blocks of "
            "its own, which would be cut at each shard's edge and cannot be gathered whole.",
            example=_BASE + "optimizer = adamw8bit\nrun { distributed = fsdp }\n",
            fix="Use `adamw` with fsdp, or `distributed = ddp`, where every process holds "
            "the whole 8-bit state.",
        ),
        Code(
            code="SW418", severity=E, title="recompute with spectral norm",
            explanation="`recompute = true` runs each block's forward again in the backward "
            "pass. A spectrally normalised layer updates its power-iteration vectors on every "
            "forward pass in training, so it would update them twice a step and the run's "
            "numbers would differ from the run without recompute.",
            example=_with("ffn = swiglu }", "ffn = swiglu, spectral_norm = true }").replace(
                "{ steps = 10 }", "{ steps = 10, recompute = true }"),
            fix="Drop `recompute`, or drop `spectral_norm` from the blocks.",
        ),
        Code(
            code="SW501", severity=E, title="clm with bidirectional attention",
            explanation="Next-token prediction with bidirectional attention lets each "
            "position see the token it must predict.",
            example=_with("objective = mlm", "objective = clm"),
            fix="Set `mode = causal` in every block's attention.",
        ),
        Code(
            code="SW502", severity=W, title="masked objective with causal attention",
            explanation="MLM and masked diffusion fill in tokens from both sides; causal "
            "attention hides the right side.",
            example=_with("mha(heads = 4)", "mha(heads = 4, mode = causal)"),
            fix="Use `mode = bidirectional`.",
        ),
        Code(
            code="SW503", severity=W, title="schedule length",
            explanation="With time as depth, an explicit schedule lists one mask ratio per "
            "stack, input side first.",
            example=_with("objective = mlm",
                          "objective = masked_diffusion(mask = [0.9, 0.5, 0.15])"),
            fix="List one ratio per stack.",
        ),
        Code(
            code="SW504", severity=W, title="noise not decreasing toward the head",
            explanation="With time as depth the stacks at the input side should see the "
            "most noise and those next to the head the least.",
            example=_with("objective = mlm",
                          "objective = masked_diffusion(mask = linear(0.15 -> 0.9))"),
            fix="Reverse the schedule: `linear(0.9 -> 0.15)`.",
        ),
        Code(
            code="SW505", severity=E, title="time as input without an embedding",
            explanation="With time as input the network must be told the noise level.",
            example=_with("objective = mlm", "objective = masked_diffusion(time = "
                          "input(embedding = none))"),
            fix="Use `embedding = sinusoidal` or `learned`.",
        ),
        Code(
            code="SW506", severity=E, title="time steps against a listed schedule",
            explanation="A listed schedule has one time step per ratio.",
            example=_with("objective = mlm", "objective = masked_diffusion(time = input("
                          "num_time_steps = 5), mask = [0.9, 0.15])"),
            fix="Leave num_time_steps out, or list that many ratios.",
        ),
        Code(
            code="SW507", severity=E, title="time as depth without stage-wise growth",
            explanation="Time as depth gives each stack its own noise level while it "
            "trains; end_to_end trains every stack at once.",
            example=_with("objective = mlm", "objective = masked_diffusion").replace(
                "grow append", "grow end_to_end"
            ),
            fix="Grow with prepend or append, or use `time = input`.",
        ),
        Code(
            code="SW601", severity=E, title="data file cannot be read",
            explanation="A file a run reads (a path of a `text` or `jsonl` source, or a "
            "tokenizer `file`) is here but is a directory, a FIFO, a device or a socket, or "
            "cannot be read. Paths are resolved as the run resolves them: relative to the file "
            "that names them, and a `--set` path relative to the working directory. `sw check` "
            "looks with `os.stat` only and never opens anything but a regular file, so the "
            "result depends on the machine it runs on. (A path with nothing at it is SW604.)",
            example=_BASE + 'data { source = text("corpus") }  # a directory here\n',
            host=Host(cuda=False, data=(DataFile(written="corpus", kind=FileKind.DIRECTORY),)),
            fix="Name regular files: the files of a directory with a glob, such as "
            '`text("corpus/*.txt")`.',
        ),
        Code(
            code="SW602", severity=E, title="jsonl records without the field",
            explanation="A `jsonl` source reads the text of each record from its `field` "
            "(default `text`); one of the first records of a file (up to 8, in its first 64 "
            "KiB) is not a JSON object, or holds no string under that field. The example is "
            "checked as if corpus.jsonl began with `{\"title\": \"...\", \"body\": \"...\"}`.",
            example=_BASE + 'data { source = jsonl("corpus.jsonl") }\n',
            fix="Set `field` to the key that holds the text, or write one JSON object per line.",
            host=Host(cuda=False, data=(DataFile(
                written="corpus.jsonl", first="corpus.jsonl",
                records=(Record(line=1, text_fields=("body", "title")),),
            ),)),
        ),
        Code(
            code="SW603", severity=W, title="device cuda without a GPU",
            explanation="`run { device = cuda }` on a machine with no CUDA GPU: `sw run` "
            "would refuse to start. `sw check` tells by the NVIDIA driver's list of GPUs, "
            "without loading torch, so the warning depends on the machine it runs on.",
            example=_BASE + "run { device = cuda }\n",
            fix="Run on a GPU machine, or here with `sw run --device cpu`; `device = auto` "
            "takes a GPU where there is one.",
        ),
        Code(
            code="SW604", severity=W, title="data file not on this machine",
            explanation="A file a run reads does not exist here, or a glob matches no regular "
            "file. The data may live on the machine that will train, so `sw check` warns; "
            "`sw run` refuses to start without it (and `sw plan` and `sw compile` do not "
            "look). Paths are resolved as for SW601.",
            example=_BASE + 'data { source = text("train.txt") }  # no train.txt here\n',
            host=Host(cuda=False, data=(DataFile(written="train.txt", kind=FileKind.MISSING),)),
            fix="Fix the path, or give one on the command line: `--set "
            "data.source.files=path/to/train.txt` (`--set data.tokenizer.path=...` for a "
            "tokenizer).",
            run_refuses=True,
        ),
        Code(
            code="SW608", severity=E, title="tokenizer file that does not load",
            explanation="`tokenizer = file(PATH)` is loaded with the `tokenizers` library, as "
            "the run loads it; this file is not one it can read (not JSON, or not a "
            "tokenizer's JSON). The example is checked as if tok.json held plain text.",
            example=_BASE + 'data { tokenizer = file("tok.json") }\n',
            host=Host(cuda=False, data=(DataFile(written="tok.json", tokenizer=TokenizerFacts(
                problem="expected value at line 1 column 1")),)),
            fix="Name a tokenizer.json written by the `tokenizers` library, or by "
            "transformers' `save_pretrained`.",
        ),
        Code(
            code="SW605", severity=E, title="data settings that disagree",
            explanation="`validation_data` names the validation text, so a held-out "
            "`validation` fraction or a `split` beside it says the opposite. `windows = random` "
            "draws training windows at any offset of the training text: with `split = "
            "interleaved` that text holds the validation windows, and a stage's activation "
            "cache (kept per window) would only grow.",
            example=_BASE + "data { windows = random, validation = 0.1 }\n",
            fix="With random windows hold out the end of the text (`split = tail`) or name "
            "`validation_data`, and set `cache = off`; with `validation_data` leave "
            "`validation` and `split` out.",
        ),
        Code(
            code="SW606", severity=W, title="TensorBoard without its package",
            explanation="`run { tensorboard = true }` writes TensorBoard event files beside "
            "metrics.jsonl with the tensorboard package (no TensorFlow), which this machine "
            "does not have; `sw run` refuses to start without it.",
            example=_BASE + "run { tensorboard = true }\n",
            host=Host(cuda=False, data=(), tensorboard=False),
            fix="`pip install 'stackwise-dsl[tensorboard]'`, or remove `tensorboard = true`.",
            run_refuses=True,
        ),
        Code(
            code="SW607", severity=E, title="a batch the processes cannot share",
            explanation="A run on several processes (`sw run --nproc N`, `sw check --nproc N`) "
            "cuts every micro-batch into equal slices, one per process, so that the global "
            "batch, and with it every number, is that of one process; `batch` must be a "
            "multiple of the number of processes (`--nproc` x machines).",
            example=_BASE + "data { source = stdlib, batch = 6 }\n",
            host=Host(cuda=False, data=(), processes=4),
            fix="Make `batch` a multiple of the number of processes, or use fewer.",
        ),
    )
}  # fmt: skip


def lookup(code: str) -> Code | None:
    """A code by name, case-insensitively, with or without the `SW` prefix."""
    key = code.strip().upper()
    if not key.startswith("SW"):
        key = "SW" + key
    return CODES.get(key)
