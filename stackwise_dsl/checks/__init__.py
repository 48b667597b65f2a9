"""Semantic checks over the IR: one concern per module, run in the order of `CHECKS`.

Each check is a pure function `(facts) -> Iterator[Diagnostic]` with a one-line docstring;
`Facts` (ir/facts.py) is the spec with its lookups precomputed once, so every check stays
linear in the size of the spec. `run_checks` looks at the files the spec's data names (unless
the host already says what they are: host.py), runs every check, and returns every
diagnostic, deduplicated and sorted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.checks.adapters import (
    check_lora_rank,
    check_lora_tables,
    check_lora_targets,
    check_merge_spectral_norm,
)
from stackwise_dsl.checks.attention import (
    check_head_divisibility,
    check_kernel_dim,
    check_latent_ranks,
    check_rope_head_dim,
)
from stackwise_dsl.checks.cache import check_activation_cache
from stackwise_dsl.checks.data import check_data_settings
from stackwise_dsl.checks.growth import (
    check_copy_init,
    check_end_to_end_settings,
    check_growth_stacks,
    check_identity_init,
    check_recompute_spectral_norm,
    check_something_trains,
    check_stage_overrides,
    check_steps_or_tokens,
    check_top_size,
)
from stackwise_dsl.checks.model import check_context, check_tied_head, check_vocab
from stackwise_dsl.checks.names import check_references, check_unused_definitions
from stackwise_dsl.checks.objective import (
    check_depth_schedule,
    check_objective_mode,
    check_time_input,
)
from stackwise_dsl.checks.paths import check_path_characters
from stackwise_dsl.checks.precision import (
    check_bf16_cpu,
    check_fp16_device,
    check_fsdp_optimizer,
    check_quantized_trainable,
)
from stackwise_dsl.checks.pretrained import (
    check_one_directory,
    check_pretrained_dir,
    check_pretrained_init,
)
from stackwise_dsl.checks.ranges import check_file_lists, check_ranges
from stackwise_dsl.checks.runnable import (
    check_batch_shared,
    check_cuda_device,
    check_data_files,
    check_jsonl_field,
    check_tensorboard,
    check_tokenizer_file,
)
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.ir.nodes import Spec
from stackwise_dsl.machine.host import CPU_ONLY, Host

Check = Callable[[Facts], Iterator[diag.Diagnostic]]

CHECKS: tuple[Check, ...] = (
    check_references,
    check_unused_definitions,
    check_ranges,
    check_file_lists,
    check_head_divisibility,
    check_rope_head_dim,
    check_latent_ranks,
    check_kernel_dim,
    check_tied_head,
    check_context,
    check_vocab,
    check_pretrained_init,
    check_one_directory,
    check_pretrained_dir,
    check_growth_stacks,
    check_stage_overrides,
    check_steps_or_tokens,
    check_end_to_end_settings,
    check_copy_init,
    check_top_size,
    check_identity_init,
    check_recompute_spectral_norm,
    check_something_trains,
    check_quantized_trainable,
    check_fp16_device,
    check_bf16_cpu,
    check_fsdp_optimizer,
    check_activation_cache,
    check_lora_rank,
    check_lora_targets,
    check_lora_tables,
    check_merge_spectral_norm,
    check_objective_mode,
    check_depth_schedule,
    check_time_input,
    check_path_characters,
    check_data_settings,
    check_data_files,
    check_jsonl_field,
    check_tokenizer_file,
    check_cuda_device,
    check_tensorboard,
    check_batch_shared,
)

__all__ = ["CHECKS", "CPU_ONLY", "Host", "run_checks"]


def run_checks(spec: Spec, host: Host = CPU_ONLY) -> tuple[diag.Diagnostic, ...]:
    """Every check's diagnostics: the same code at the same place once, sorted by place."""
    facts = Facts.of(spec, host.knowing_data(spec))
    return diag.dedupe(d for check in CHECKS for d in check(facts))
