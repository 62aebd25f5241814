"""``torch.compile`` for training: the policy's heavy parts compiled in place, names unchanged.

The backbone, the pooling transformer and the recurrent blocks are compiled with
``nn.Module.compile``, which keeps each module where it is: parameter and buffer names, state
dicts, checkpoints, EMA copies and DDP see the same module as without compiling (no
``_orig_mod.`` prefix). The rest of the forward (input checks, memory bookkeeping, the heads)
stays eager, so a check that reads a tensor on the host does not split a compiled graph.

The compiler chooses itself which activations to keep for backward and which to recompute, so
the hand-made rebuilding of ``fused.rebuilt_activations`` (saved-tensor hooks) is switched off.
"""

from __future__ import annotations

from torch import nn

from minetrain.errors import ConfigError

DEFAULT_BACKEND = "inductor"


def compile_backends() -> list[str]:
    """The ``torch.compile`` backends of this torch, debugging ones (``aot_eager``, ``eager``) included."""
    from torch._dynamo import list_backends

    return sorted(list_backends(exclude_tags=()))


def compile_policy(policy: nn.Module, backend: str = DEFAULT_BACKEND) -> None:
    """Compile the parts ``policy`` lists in ``compile_parts`` (RocketPolicy: its backbone, pooling and
    recurrent blocks) in place with ``backend``.

    ``inductor`` (the default) generates fused kernels (on CPU it needs a C++ compiler);
    ``aot_eager`` traces forward and backward the same way but runs torch's own kernels, for
    checking that a model compiles, quickly.
    """
    backends = compile_backends()
    if backend not in backends:
        raise ConfigError(f"torch.compile backend {backend!r} is not one of {', '.join(backends)}")
    parts = getattr(policy, "compile_parts", None)
    if not parts:
        raise ConfigError(
            f"model.compile: {type(policy).__name__} names no parts to compile (compile_parts); "
            "set model.compile=false"
        )
    if hasattr(policy, "rebuild_activations"):
        policy.rebuild_activations = "none"
    for name in parts:
        policy.get_submodule(name).compile(backend=backend)
