"""`--set` read as SkyRL reads it: Hydra's own override parser, then SkyRL's own config at the pinned commit.

SkyRL's entry point (skyrl_train/entrypoints/main_base.py, `@hydra.main(config_name=
"ppo_base_config")`) parses each argument with Hydra's override grammar (hydra-core 1.3,
hydra/core/override_parser/overrides_parser.py) and composes them onto its config.
Done on the head node, a mistake there fails after the cluster is up and billed; and
Hydra accepts things that break SkyRL later: `trainer=1` replaces a whole section,
`trainer.epochs=abc` a number, `++key=...` and `~key` get past render's own checks.
So render does both here, before anything is written:

- check_sets: each --set alone, in one line naming it: the grammar (with the quoted form
  as the hint), Hydra's prefixes, sweeps, interpolations, a key SkyRL's config has, a
  value where it holds a value (not a section), of the kind its default is, and not a
  key the plan derives (PLAN_KEYS: --nodes/--gpus/--bucket decide those);
- check_composes: the task's whole override list (task_spec.training_overrides) composed
  onto SkyRL's config, as the smoke suite's skyrl tier does in the image.

The config comes from skyrl_config (hash-verified, offline after the first fetch).
Hydra and OmegaConf are imported inside the functions: `invoke --list` stays instant.
"""
from __future__ import annotations

import difflib
import functools
import math
import re

from skyrl_stack.errors import StackError, first_line
from skyrl_stack.launch.run_script import _quote as shell_word  # how the task's run: quotes them, for the hints
from skyrl_stack.launch.skyrl_config import SKYRL_COMMIT

# Keys render derives from the task's shape, and the option that sets each (a key, or a section and all under it).
# A --set of one would contradict the plan in the header (and the batch checks, which use that plan's GPUs).
PLAN_KEYS = {
    "trainer.placement": "--nodes and --gpus (policy and ref on every GPU, inference colocated: colocate_all)",
    "generator.num_inference_engines": "--nodes x --gpus / generator.inference_engine_tensor_parallel_size",
    "generator.inference_engine_data_parallel_size": "the plan (one engine per tensor-parallel group; SkyRL "
                                                     "0.2.0 does not support more, its config says)",
    "trainer.policy.sequence_parallel_size": "the plan (its data-parallel size is nodes x GPUs, the batch "
                                             "checks' divisor)",
    "trainer.ckpt_path": "--bucket and --run (the run's folder; without a bucket the nodes' disks, sized for it)",
}
# Whole-number defaults that are fractions to SkyRL (LoRA dropout 0): a float fits them.
FRACTIONS = {"trainer.policy.model.lora.dropout", "trainer.critic.model.lora.dropout"}
# Hydra's prefixes (OverrideType): what each does, and why render takes none of them (but see _adds_free_form).
PREFIXES = {
    "ADD": ("+", "adds a new key to SkyRL's config"),
    "FORCE_ADD": ("++", "adds or overrides a key, past render's checks"),
    "DEL": ("~", "deletes a key SkyRL's code reads"),
}
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list"}
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")  # a plain ${a.b} in SkyRL's own config (not a resolver)
_MISSING = object()


def hydra_quoted(text: str) -> str:
    """text as a Hydra quoted string, by Hydra's own rule (QuotedString.with_quotes: quotes and the
    backslashes before them escaped): Hydra reads it back as exactly text."""
    from hydra.core.override_parser.types import Quote, QuotedString

    return QuotedString(text=text, quote=Quote.single).with_quotes()


def check_sets(sets: tuple[tuple[str, str], ...]) -> None:
    """Refuse, in one line naming it, any --set SkyRL's parser or config would refuse or misread:
    first its key (grammar, prefix, in SkyRL's config, not derived by the plan), then its value."""
    if not sets:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    config = _base_config()
    for key, text in sets:
        item = f"{key}={text}"
        if "${" in text:
            raise StackError(f"bad --set {item}: ${{...}} is an interpolation, which Hydra leaves to the node "
                             "to resolve, unchecked", hint="give the value itself")
        try:
            (override,) = parser.parse_overrides([f"{key}=x"])
        except OverrideParseException:
            raise StackError(f"bad --set {item}: Hydra's override grammar cannot read the key {key!r}",
                             hint="a key is dot-separated names from SkyRL's config, e.g. --set trainer.epochs=1") from None
        name = override.key_or_group
        free_form = _adds_free_form(config, override)
        if override.type.name in PREFIXES and not free_form:
            prefix, meaning = PREFIXES[override.type.name]
            raise StackError(f"bad --set {item}: Hydra's {prefix} prefix {meaning}; render takes none here",
                             hint=_prefix_hint(config, name))
        base = None if free_form else _check_key(config, name, item)
        try:
            (override,) = parser.parse_overrides([item])
        except OverrideParseException:
            raise StackError(f"bad --set {item}: Hydra's override grammar cannot read the value unquoted",
                             hint=_value_hint(key, text, base)) from None
        if override.is_sweep_override():
            raise StackError(f"bad --set {item}: Hydra reads it as a sweep, which SkyRL's entry point refuses",
                             hint=f"a list is --set {shell_word(f'{name}=[{text}]')}; a string: --set "
                                  f"{shell_word(f'{name}={hydra_quoted(text)}')}")
        if "???" in _strings(override.value()):  # OmegaConf's MISSING: SkyRL's first read of it raises
            raise StackError(f"bad --set {item}: ??? is OmegaConf's marker for a missing value",
                             hint=_value_hint(key, text, base))
        problem = None if name in FRACTIONS else _kind_problem(base, override.value())
        if problem:
            raise StackError(f"bad --set {item}: SkyRL's {name} is {problem} ({_as_override(base)} in its config), "
                             f"Hydra reads {text!r} as {_kind_of(override.value())}", hint=_value_hint(key, text, base))


def check_composes(overrides: list[str]) -> None:
    """The task's whole override list composes onto SkyRL's config (the same compose as the image's skyrl tier)."""
    from skyrl_stack.smoke.skyrl import CONFIG_NAME

    try:
        _composes(tuple(overrides))
    except StackError:
        raise
    except Exception as exc:  # Hydra's ConfigCompositionException, OmegaConf's errors: each names the key
        raise StackError(f"SkyRL's {CONFIG_NAME} (SkyRL {SKYRL_COMMIT[:12]}) does not compose with the task's "
                         f"overrides: {first_line(exc)}", hint="change or drop the --set named there") from None


# Composing takes ~0.1 s; the config is pinned by hash, so a result holds for the whole process (a library
# caller or a test that builds many specs composes each distinct list once).
@functools.lru_cache(maxsize=256)
def _composes(overrides: tuple[str, ...]) -> bool:
    from skyrl_stack.launch.skyrl_config import compose

    compose(list(overrides))
    return True


@functools.lru_cache(maxsize=1)
def _base_config() -> dict:
    """SkyRL's ppo_base_config composed with no overrides, as plain data (interpolations left unresolved)."""
    from omegaconf import OmegaConf

    from skyrl_stack.launch.skyrl_config import compose

    return OmegaConf.to_container(compose([]), resolve=False)


def _check_key(config: dict, key: str, item: str):
    """SkyRL's default at key (refused: a key its config lacks, a section, a key the plan derives)."""
    base = _lookup(config, key)
    if base is _MISSING:
        raise StackError(f"bad --set {item}: SkyRL's config has no key {key}", hint=_unknown_key_hint(config, key))
    if isinstance(base, dict):
        example = next((leaf for leaf in _leaves(base, key) if not _plan_source(leaf)), None)
        raise StackError(
            f"bad --set {item}: {key} is a section of SkyRL's config ({len(base)} keys), not a value",
            hint=f"set one of its keys, e.g. --set {example}=..." if example else
                 f"add a key with SkyRL's form --set +{key}.NAME=VALUE",
        )
    derived = _plan_source(key)
    if derived:
        raise StackError(f"bad --set {item}: render derives {key} from {derived}",
                         hint="leave it to render: the header's Plan line shows what it chose")
    return base


def _value_hint(key: str, text: str, base) -> str:
    """For a value SkyRL's key cannot take as written: Hydra's quoted form where a string fits, else an example."""
    if _kind_problem(base, "") is None:
        return f"quote it for Hydra: --set {shell_word(f'{key}={hydra_quoted(text)}')}"
    return f"e.g. --set {shell_word(f'{key}={_as_override(base)}')}"


def _plan_source(key: str) -> str | None:
    """The option a key of PLAN_KEYS comes from (None: not one render derives)."""
    return next((source for prefix, source in PLAN_KEYS.items() if key == prefix or key.startswith(prefix + ".")), None)


def _kind_problem(base, value) -> str | None:
    """What kind SkyRL's default says the value must be, when the value is not that kind (None: it fits).

    By the default's type: true/false stays a bool, a whole number an int, a number
    an int or finite float, a list a list; a string takes a string or a number (Hydra
    reads `trainer.run_name=2024` as 2024; SkyRL formats it); a string or a list also
    takes null, SkyRL's own "unset" (its example sets trainer.resume_mode=null); a null
    default takes anything.
    """
    if base is None or (isinstance(base, str) and "${" in base):  # null, or a resolver render cannot follow
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    kind = type(base)
    if kind is bool:
        fits = type(value) is bool
    elif kind is int:
        fits = type(value) is int
    elif kind is float:
        fits = type(value) in (int, float)
    elif kind is str:
        fits = value is None or type(value) in (str, int, float)
    else:  # list
        fits = value is None or isinstance(value, list)
    return None if fits else _KINDS.get(kind, kind.__name__)


def _strings(value) -> list[str]:
    """Every string in a parsed value (itself, or inside its lists and dicts)."""
    if isinstance(value, str):
        return [value]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [text for pair in items for part in pair for text in _strings(part)]


def _kind_of(value) -> str:
    return "null" if value is None else "a dict" if isinstance(value, dict) else _KINDS.get(type(value), type(value).__name__)


def _as_override(value) -> str:
    """A default from SkyRL's config written back as an override value (for a hint)."""
    if isinstance(value, bool):
        return str(value).lower()
    return hydra_quoted(value) if isinstance(value, str) else str(value)


def _lookup(config: dict, key: str, depth: int = 0):
    """The value at a dotted key in SkyRL's config (unresolved), following its own plain ${a.b} references."""
    node = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
        reference = _REFERENCE.fullmatch(node) if isinstance(node, str) else None
        if reference and depth < 8:
            node = _lookup(config, reference[1], depth + 1)
    return node


def _leaves(tree: dict, prefix: str = ""):
    for name, value in tree.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path


def _adds_free_form(config: dict, override) -> bool:
    """`+SECTION.NAME=VALUE` under a section SkyRL's config leaves empty for the user to fill
    (generator.engine_init_kwargs, chat_template_kwargs): SkyRL documents exactly this form for
    them (ppo_base_config.yaml), and nothing render checks lives there."""
    section, _, name = override.key_or_group.rpartition(".")
    return override.type.name == "ADD" and bool(section) and _lookup(config, section) == {}


def _prefix_hint(config: dict, key: str) -> str:
    if _lookup(config, key) is not _MISSING:
        return f"set it without the prefix (render then checks it): --set {key}=VALUE"
    free_form = [path for path in _leaves(config) if _lookup(config, path) == {}]
    return (f"SkyRL's config has no {key}; keys can be added only under {', '.join(free_form)} "
            f"(--set +SECTION.NAME=VALUE)")


def _unknown_key_hint(config: dict, key: str) -> str:
    if _lookup(config, key.rpartition(".")[0]) == {}:  # a section SkyRL leaves for the user to fill
        return f"add it with SkyRL's form: --set +{key}=VALUE"
    close = difflib.get_close_matches(key, list(_leaves(config)), n=1, cutoff=0.8)
    where = f"skyrl_train/config/ppo_base_config.yaml at SkyRL {SKYRL_COMMIT[:12]}"
    return f"did you mean {close[0]}? (keys: {where})" if close else f"see {where} for its keys"
