"""params.yaml at the edge: read it once and check it against the study's schema.

``load_params(path)`` returns the file as a plain dict (what the CLI unpacks), after checking
every section, key, type and range with pydantic. A bad file fails in a fraction of a second
with one line naming the file, the dotted key, the value and what was expected::

    params.yaml: stage2.n_tta_boxes: expected an integer, got 2.7

Profiles (``profiles.<name>: {dotted key: value}``) are checked the same way: each profile is
laid over the active values and the result must pass the schema, so a switch never writes a
value the schema refuses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

__all__ = ["ParamsError", "PROFILES", "load_params", "validate_params", "section"]

#: Profiles every params.yaml defines (``llseg profile <name>``).
PROFILES = ("smoke", "cpu", "paper", "gpu")


class ParamsError(ValueError):
    """A params file that cannot be read or does not match the schema (one line: file, key, problem)."""


# ----------------------------------------------------------------------------- schema

_STRICT = ConfigDict(extra="forbid", strict=True)

Int = Annotated[int, Field(strict=True)]
Count = Annotated[int, Field(strict=True, ge=1)]
Seed = Annotated[int, Field(strict=True, ge=0)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1)]
Rate = Annotated[float, Field(strict=True, gt=0, le=1)]
Levels = Annotated[int, Field(strict=True, ge=1, le=7)]
Loss = Literal["ce", "ce_dice"]


def _length(n: int):
    """An after-validator: the list holds exactly ``n`` values."""
    def check(v):
        if len(v) != n:
            raise ValueError(f"expected a list of exactly {n} values")
        return v
    return AfterValidator(check)

Schedule = Literal["constant", "poly"]


def _muscle_key(value: str) -> str:
    from . import anatomy

    try:
        anatomy.muscle(value)
    except (KeyError, ValueError):
        raise ValueError("expected a muscle key or Table-1 name (see llseg.anatomy)") from None
    return value


class _Section(BaseModel):
    model_config = _STRICT


class Phantom(_Section):
    n_subjects: Annotated[int, Field(strict=True, ge=2)]
    seed: Seed
    downscale: Annotated[float, Field(strict=True, gt=0, le=1)]
    spiral_fraction: Fraction
    bias_strength: NonNeg
    noise_sigma: NonNeg
    supersample: Count

    @field_validator("supersample")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError("expected an odd integer >= 1")
        return v


class Split(_Section):
    test_fraction: Annotated[float, Field(strict=True, gt=0, lt=1)]
    seed: Seed


class Preprocess(_Section):
    n4: bool
    n4_shrink: Count
    n4_iterations: Annotated[list[Count], Field(min_length=1, max_length=8)]
    spacing_mm: Annotated[list[Positive], _length(3)]
    fov_mm: Annotated[list[Positive], _length(2)]


class BiasFigure(_Section):
    case: str
    thigh_fraction: Fraction
    calf_fraction: Fraction


class Augment(_Section):
    max_rotation_deg: Annotated[float, Field(strict=True, ge=0, le=180)]
    max_shear: Annotated[float, Field(strict=True, ge=0, lt=1)]
    flip_lr: bool


class Stage1(_Section):
    factor: Annotated[list[Positive], _length(3)]
    levels: Levels
    root_filters: Count
    iterations: Count
    learning_rate: Rate
    lr_schedule: Schedule
    loss: Loss
    class_weight_power: NonNeg
    validate_every: Count
    seed: Seed


class Stage2(_Section):
    levels: Levels
    root_filters: Count
    max_voxels: Count
    iterations: Count
    learning_rate: Rate
    lr_schedule: Schedule
    loss: Loss
    ratio_min: Annotated[float, Field(strict=True, ge=1)]
    ratio_max: Annotated[float, Field(strict=True, ge=1)]
    n_tta_boxes: Count
    class_weight_power: NonNeg
    validate_every: Count
    seed: Seed

    @model_validator(mode="after")
    def _ratio_order(self):
        if self.ratio_max < self.ratio_min:
            raise ValueError(f"expected ratio_min <= ratio_max, got {self.ratio_min} > {self.ratio_max}")
        return self


# Per-muscle overrides: iterations_factor plus any stage2 key (all optional).
MuscleOverride = create_model(
    "MuscleOverride", __config__=_STRICT, iterations_factor=(Positive, 1.0),
    **{name: ((Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation) | None, None) for name, info in Stage2.model_fields.items()})


class Postprocess(_Section):
    threshold: Annotated[float, Field(strict=True, gt=0, lt=1)]
    closing_radius_vox: Annotated[list[Annotated[int, Field(strict=True, ge=0)]], _length(3)]


class Evaluation(_Section):
    stage: Literal["stage1", "stage2"]


class Rendering(_Section):
    case: str
    upper_fraction: Fraction
    lower_fraction: Fraction
    step_size: Count
    max_faces: Count


class TwoStages(_Section):
    case: str
    muscle: str
    side: Literal["right", "left"]
    gt_ratio: Annotated[float, Field(strict=True, ge=1)]
    ratio_low: Annotated[float, Field(strict=True, ge=1)]
    ratio_high: Annotated[float, Field(strict=True, ge=1)]

    _check_muscle = field_validator("muscle")(classmethod(lambda cls, v: _muscle_key(v)))


class Claims(_Section):
    n4_min_cov_reduction_pct: Float
    n4_min_share_improved: Fraction
    stage2_min_gain: Float
    stage1_max_estimated_share: Fraction
    roughness_min_reduction: Float
    box_ratio_min_dice_difference: NonNeg
    tta_min_gain: Float
    similar_dice_tolerance: NonNeg
    ablation_dice: Literal["final_dice", "best_dice"]
    better_min_gap: NonNeg
    levels_beyond_three_max_gain: NonNeg
    block_max_spread: NonNeg
    overall_dice_tolerance: NonNeg
    count_tolerance: Annotated[int, Field(strict=True, ge=0)]
    slightly_worse_max_gap: NonNeg
    worst_k: Count
    table1_min_spearman: Annotated[float, Field(strict=True, ge=-1, le=1)]
    volume_error_tolerance_pct: NonNeg
    msd_tolerance_mm: NonNeg
    most_share: Fraction
    min_abs_spearman: Fraction
    confidence: Annotated[float, Field(strict=True, gt=0.5, lt=1)]
    bootstrap_resamples: Annotated[int, Field(strict=True, ge=100)]
    bootstrap_seed: Seed
    ablation_training_sd: NonNeg = 0.0
    ablation_early_training_sd: NonNeg = 0.0
    study_retraining_sd: dict[str, NonNeg | list[NonNeg]] = Field(default_factory=dict)  # claim id -> SD(s)


class Variant(_Section):
    arch: Literal["unet", "fcn8s", "segnet"]
    levels: Levels
    root_filters: Count
    block: Literal["plain", "residual", "dense"]
    panel: str | list[str]

    @field_validator("panel")
    @classmethod
    def _panels(cls, v):
        if not all(isinstance(p, str) and p in "abcd" and len(p) == 1 for p in ([v] if isinstance(v, str) else v)) or not v:
            raise ValueError("expected a Figure-5 panel a, b, c or d, or a list of them")
        return v


class Ablation(_Section):
    muscle: str
    iterations: Count
    validate_every: Count
    seed: Seed
    learning_rate: Rate
    lr_schedule: Schedule
    loss: Loss
    class_weight_power: NonNeg
    max_voxels: Count
    divisor: Count
    variants: Annotated[dict[str, Variant], Field(min_length=1)]

    _check_muscle = field_validator("muscle")(classmethod(lambda cls, v: _muscle_key(v)))

    @model_validator(mode="after")
    def _divisor(self):
        for name, v in self.variants.items():
            if self.divisor % 2 ** (v.levels - 1):
                raise ValueError(f"variants.{name}: divisor {self.divisor} must be a multiple of "
                                 f"2 ** (levels - 1) = {2 ** (v.levels - 1)}")
        return self


class Params(BaseModel):
    model_config = _STRICT

    profile: Literal[PROFILES]
    phantom: Phantom
    split: Split
    preprocess: Preprocess
    bias_figure: BiasFigure
    augment: Augment
    stage1_groups: Annotated[list[str], Field(min_length=1)]
    stage1: Stage1
    stage2: Stage2
    stage2_muscles: dict[str, MuscleOverride | None]
    postprocess: Postprocess
    evaluation: Evaluation
    rendering: Rendering
    two_stages: TwoStages
    claims: Claims
    ablation: Ablation
    profiles: dict[str, Annotated[dict[str, Any], Field(min_length=1)]]

    @field_validator("profiles")
    @classmethod
    def _known_profiles(cls, v):
        unknown = sorted(set(v) - set(PROFILES))
        if unknown:
            raise ValueError(f"unknown profile(s) {unknown}; expected {', '.join(PROFILES)}")
        return v

    @field_validator("stage1_groups")
    @classmethod
    def _known_groups(cls, v):
        want = [f"{g:02d}" for g in range(1, 11)]
        bad = [g for g in v if g not in want]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"expected distinct two-digit groups among {want}, got {v}")
        return v

    @field_validator("stage2_muscles")
    @classmethod
    def _known_muscles(cls, v):
        from . import anatomy

        keys = {m.key for m in anatomy.MUSCLES}
        unknown = sorted(set(v) - keys)
        if unknown:
            raise ValueError(f"unknown muscle key(s) {unknown}; expected keys of llseg.anatomy.MUSCLES")
        return v


SECTIONS = tuple(Params.model_fields)

# ----------------------------------------------------------------------------- messages

_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
}


def _describe(err: dict) -> str:
    """'what was expected' of one pydantic error, in the words of the params file."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}"
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
              "less_than_equal": "<= {le}"}
    if kind in bounds:
        return "expected a value " + bounds[kind].format(**ctx)
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} value(s)"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} value(s)"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"][0].lower() + err["msg"][1:]


def _dotted(loc) -> str:
    # Union members and validator names show up in pydantic's location: drop them.
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")
                                                                              or p == "MuscleOverride")))


def _one_line(path, err: dict, *, prefix: tuple = ()) -> str:
    loc = tuple(prefix) + tuple(err["loc"])
    key = _dotted(loc)
    if err["type"] == "missing":
        return f"{path}: missing section '{key}'" if len(loc) == 1 else f"{path}: {key}: missing (required key)"
    if err["type"] == "extra_forbidden":
        return f"{path}: {key}: unknown {'section' if len(loc) == 1 else 'key'} (typo? not in the schema of llseg.params)"
    where = f"{path}: {key}: " if key else f"{path}: "
    return f"{where}{_describe(err)}, got {err['input']!r}" if not isinstance(err["input"], dict) else f"{where}{_describe(err)}"


def _raise_first(path, exc: ValidationError, *, prefix: tuple = ()) -> None:
    import difflib

    errors = exc.errors(include_url=False)
    # A missing section first (it explains the others), then an unknown key (a typo explains the
    # missing key beside it), then in file order.
    errors.sort(key=lambda e: 0 if e["type"] == "missing" and len(e["loc"]) == 1 else
                1 if e["type"] == "extra_forbidden" else 2)
    msg = _one_line(path, errors[0], prefix=prefix)
    if errors[0]["type"] == "extra_forbidden":
        loc = errors[0]["loc"]
        missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == loc[:-1]]
        close = difflib.get_close_matches(str(loc[-1]), missing, n=1)
        if close:
            msg = msg.replace("(typo? not in the schema of llseg.params)", f"(did you mean '{close[0]}'?)")
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem(s))"
    raise ParamsError(msg) from None


# ----------------------------------------------------------------------------- loading

def validate_params(params, path="params.yaml") -> dict:
    """Check a loaded params mapping against the schema (active values and every profile).

    Parameters
    ----------
    params : dict
        As read from YAML.
    path : str or Path
        The file's name, used in messages only.

    Returns
    -------
    dict
        ``params`` itself (unchanged).

    Raises
    ------
    ParamsError
        One line: ``<file>: <dotted key>: <what was expected>, got <value>``.
    """
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        _raise_first(path, exc)
    for name, overrides in params["profiles"].items():
        laid = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
        for dotted, value in overrides.items():
            parts = str(dotted).split(".")
            if len(parts) != 2 or parts[0] not in SECTIONS or not isinstance(laid.get(parts[0]), dict) \
                    or parts[1] not in laid[parts[0]]:
                raise ParamsError(f"{path}: profiles.{name}.{dotted}: no such parameter "
                                  f"(expected <section>.<key> of an active value)")
            laid[parts[0]][parts[1]] = value
        try:
            Params.model_validate(laid)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = err["loc"]
            dotted = ".".join(str(p) for p in loc[:2])
            if dotted in overrides:  # the profile's own value is wrong
                err = {**err, "loc": ("profiles", name, dotted, *loc[2:])}
            else:                    # an active value that no longer fits with the profile's
                err = {**err, "loc": (f"{_dotted(loc)} (with profiles.{name})",)}
                if err["type"] == "missing":
                    err["type"] = "value_error"
            raise ParamsError(_one_line(path, err)) from None
    return params


def load_params(path="params.yaml") -> dict:
    """Read and check a params file; return it as a plain dict.

    Raises
    ------
    FileNotFoundError
        No such file.
    ParamsError
        YAML syntax error (file, line, column) or a value the schema refuses (file, dotted key,
        value, what was expected).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such params file (run from the study folder or pass --params)")
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, expected a params YAML file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read the params file: {exc}") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark is not None and mark is not None and cmark.line != mark.line:
            problem += f" ({context} at line {cmark.line + 1}, column {cmark.column + 1})"
        raise ParamsError(f"{where}: invalid YAML: {problem}") from None
    return validate_params(params, path)


def section(params: dict, name: str, path="params.yaml") -> dict:
    """The section ``name`` of a loaded params dict (KeyError naming ``path`` if it is missing)."""
    if name not in params:
        raise KeyError(f"{path}: missing section '{name}'")
    return params[name]
