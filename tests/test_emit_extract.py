"""Extracting our own definitions for an emitted script: exactly what is needed, verbatim
but for our imports, and it runs like the package's own code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stackwise_dsl.emit.extract import ExtractError, extract

NVFP4 = ["stackwise_dsl.ir.enums", "stackwise_dsl.core.dequantized", "stackwise_dsl.core.nvfp4",
         "stackwise_dsl.core.precision"]  # fmt: skip


def test_the_closure_of_what_is_asked_and_nothing_else():
    e = extract(NVFP4, ["NVFP4Linear"])
    names = [name for _, name, _ in e.definitions]
    assert names == ["_Dequantized", "dequantized_linear", "BLOCK", "E2M1", "_MIDPOINTS",
                     "E4M3_MAX", "quantize", "dequantize", "_PAIRS", "_pair_table", "decode_e2m1",
                     "NVFP4Linear"]  # fmt: skip
    assert "RowInt8Linear" not in e.source and "loss_scaler" not in e.source
    assert e.imports == ("from torch import nn", "import torch", "import torch.nn.functional as F")
    assert "stackwise_dsl" not in e.source  # the import of dequantized is gone


def test_extraction_is_deterministic_and_imports_nothing_heavy():
    code = (
        "import sys\nfrom stackwise_dsl.emit.extract import extract\n"
        f"e = extract({NVFP4!r}, ['NVFP4Linear'])\n"
        "assert 'torch' not in sys.modules\nprint(e.source)\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]  # fmt: skip
    assert runs[0] == runs[1] and len(runs[0]) > 1000


def test_extracted_code_computes_what_the_package_computes():
    import torch

    from stackwise_dsl.core import nvfp4

    e = extract(NVFP4, ["NVFP4Linear"])
    namespace: dict = {}
    exec(
        compile("from __future__ import annotations\n" + e.source, "emitted.py", "exec"), namespace
    )
    w = torch.randn(48, 40, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    ours, theirs = nvfp4.NVFP4Linear(w), namespace["NVFP4Linear"](w)
    assert torch.equal(ours(x), theirs(x))
    assert type(theirs).__module__ != nvfp4.__name__  # really the emitted class


def test_names_defined_twice_must_be_named_with_their_module():
    modules = ["stackwise_dsl.runtime", "stackwise_dsl.data"]  # both define __all__
    with pytest.raises(ExtractError, match="defined in 2"):
        extract(modules, ["__all__"])
    with pytest.raises(ExtractError, match="not given"):
        extract(["stackwise_dsl.core.nvfp4"], ["NVFP4Linear"])  # needs precision.py too


def test_attrs_classes_become_equivalent_dataclasses():
    import dataclasses

    import attrs

    from stackwise_dsl.ir.enums import Target
    from stackwise_dsl.lower import plan

    e = extract(["stackwise_dsl.ir.enums", "stackwise_dsl.lower.plan"], ["Lora"])
    assert "attrs" not in e.source.replace("__attrs", "") and "import dataclasses" in e.imports
    assert "plan_node = dataclasses.dataclass(frozen=True, kw_only=True)" in e.source
    namespace: dict = {}
    exec(compile("from __future__ import annotations\n" + "\n".join(e.imports) + "\n"
                 + e.source, "emitted.py", "exec"), namespace)  # fmt: skip
    ours = plan.Lora(rank=4, alpha=8.0, dropout=0.0, targets=(Target.Q, Target.V))
    theirs = namespace["Lora"](rank=4, alpha=8.0, dropout=0.0,
                               targets=(namespace["Target"].Q, namespace["Target"].V))  # fmt: skip
    assert dataclasses.asdict(theirs) == {
        k: v if k != "targets" else tuple(namespace["Target"](t.value) for t in v)
        for k, v in attrs.asdict(ours, recurse=False).items()
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        theirs.rank = 2
    with pytest.raises(TypeError):
        namespace["Lora"](4, 8.0, 0.0, ())  # keyword-only, as with attrs


def test_attrs_factories_map_to_dataclass_default_factories():
    e = extract(["stackwise_dsl.runtime.weights"], ["Store"])
    assert "dataclasses.field(default_factory=dict)" in e.source
    assert "@dataclasses.dataclass\nclass Store:" in e.source


def test_the_runtime_and_the_plan_emit_together_without_clashes():
    """The whole model side of a script: plan classes and the modules that read them."""
    modules = ["stackwise_dsl.ir.enums", "stackwise_dsl.lower.plan", "stackwise_dsl.lower.dispatch",
               "stackwise_dsl.core.seeds", "stackwise_dsl.core.layers",
               "stackwise_dsl.core.attention", "stackwise_dsl.core.model"]  # fmt: skip
    e = extract(modules, ["Rack", "Plan"])
    names = [name for _, name, _ in e.definitions]
    assert {"Rack", "BlockStack", "TransformerBlock", "SelfAttention", "Stack", "Plan"} <= set(
        names
    )
    assert len(names) == len(set(names))
    compile("from __future__ import annotations\n" + e.source, "emitted.py", "exec")


def test_the_extracted_runtime_passes_ruff_check_and_format(tmp_path):
    from stackwise_dsl.emit import RUNTIME_MODULES

    path = tmp_path / "runtime.py"
    path.write_text(
        "from __future__ import annotations\n\n"
        + extract(RUNTIME_MODULES, ["run", "resume", "from_json"]).source
    )
    ruff = [sys.executable, "-m", "ruff"]
    checks = [
        [*ruff, "check", "--isolated", "--line-length", "100", "--select", "E,F,W,I", str(path)],
        [*ruff, "format", "--isolated", "--line-length", "100", "--check", str(path)],
    ]
    for command in checks:
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:]


def test_a_module_alias_that_a_local_name_would_shadow_is_refused(tmp_path, monkeypatch):
    """`checkpoint.latest` would become `latest`, which the function also assigns."""
    import stackwise_dsl.emit.extract as ex

    fake = tmp_path / "fake.py"
    fake.write_text(
        "from stackwise_dsl.runtime import checkpoint\n\n\n"
        "def f(run_dir):\n    latest = checkpoint.latest(run_dir)\n    return latest\n"
    )
    real = ex.source_file
    monkeypatch.setattr(ex, "source_file", lambda m: fake if m == "stackwise_dsl.fake" else real(m))
    with pytest.raises(ExtractError, match="also a local name"):
        extract(
            [
                "stackwise_dsl.fake",
                "stackwise_dsl.core.errors",
                "stackwise_dsl.runtime.checkpoint",
            ],
            ["f"],
        )
