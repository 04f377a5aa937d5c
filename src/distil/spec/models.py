"""The project spec, ``distil.yaml``: one pydantic model per section, ``extra="forbid"`` everywhere.

Every field carries help text; ``distil init`` writes it as comments next to the value.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distil.errors import SpecError
from distil.spec.names import person_name, plain_text, run_id_problem, same_person

PLAYS = ("cost", "latency", "stability", "specialization")
_PUBLIC_KEY = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")
SEED_LIMIT = 2**32  # numpy's and torch's generators take seeds in [0, 2**32)


class _Model(BaseModel):
    # .nan fails no comparison and .inf passes every upper bound: neither is a setting anyone means
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --- task ------------------------------------------------------------------------------------------


class Label(_Model):
    name: str = Field(min_length=1, description="The label's name, as stored in records and reports.")
    words: list[str] = Field(
        default_factory=list,
        description="Verbalizer: words the teacher may answer with for this label (default: the name). "
        "The first token of each word (with a leading space) is scored at the answer position.",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return plain_text(value)

    @field_validator("words")
    @classmethod
    def _plain_words(cls, value: list[str]) -> list[str]:
        # an empty word scores the token after the input whatever it is: every record gets that label's share
        return [plain_text(word) for word in value]

    @property
    def verbalizers(self) -> list[str]:
        return self.words or [self.name]


class FewShot(_Model):
    enabled: bool = Field(True, description="Prefix the teacher's prompt with labelled examples drawn from the seeds.")
    per_label: int = Field(2, ge=0, le=16, description="How many seed examples of each label go into the prompt.")
    template: str = Field(
        "Ticket: {input}\nCategory: {label}",
        description="How one example is written; {input} and {label} are filled in. The query uses the same "
        "template with the label left blank.",
    )
    separator: str = Field("\n\n", description="Text placed between examples.")
    select: Literal["first", "similar"] = Field(
        "first",
        description="Which seeds become the examples. first: the first `per_label` of each label, the same for "
        "every input (a local teacher computes that shared prompt once); similar: for each input, the "
        "`per_label` seeds of each label most like it (TF-IDF cosine), the most similar last.",
    )
    channel_template: str = Field(
        "Category: {label}\nTicket: {input}",
        description="How one example is written for channel scoring (task.scoring: channel or both): the label "
        "first, then the input, whose likelihood under each label is what is scored.",
    )

    @field_validator("template")
    @classmethod
    def _input_then_label(cls, value: str) -> str:
        # without {input} every query is the same text, so every record gets the same distribution
        if (
            value.count("{input}") != 1
            or value.count("{label}") != 1
            or value.index("{label}") < value.index("{input}")
        ):
            raise ValueError(f"write {{input}} once, then {{label}} once after it, got {value!r}")
        return value


class Task(_Model):
    kind: Literal["classify", "generate"] = Field(description="classify: pick one of `labels`; generate: write text.")
    instruction: str = Field(
        "",
        description="Instruction given to the teacher before the examples, e.g. 'Route each support ticket to "
        "its queue.' For generate tasks it is a template with {input}.",
    )
    labels: list[Label] = Field(default_factory=list, description="The classes (classify tasks only).")
    few_shot: FewShot = Field(default_factory=FewShot, description="Few-shot prompting of the teacher.")
    calibrate: bool = Field(
        True,
        description="Contextual calibration: divide the teacher's label distribution by the one it gives a "
        "content-free input, then renormalise (Zhao et al. 2021).",
    )
    content_free_inputs: list[str] = Field(
        default_factory=lambda: ["N/A"],
        description="Content-free inputs used for calibration; their label distributions are averaged.",
    )
    scoring: Literal["direct", "channel", "both"] = Field(
        "direct",
        description="How a local teacher scores the labels. direct: the probability of each label word after "
        "the input; channel: the likelihood of the input after each label (Min et al. 2022, 'Noisy Channel "
        "Language Model Prompting'), costing one pass per label; both: the product of the two, renormalised.",
    )
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Longest teacher answer for generate tasks.")

    @model_validator(mode="after")
    def _labels_match_kind(self) -> Task:
        if self.scoring != "direct":
            if self.few_shot.select == "similar":
                raise ValueError(
                    "task.scoring: channel scoring uses the fixed shots; set task.few_shot.select: first or "
                    "task.scoring: direct"
                )
            template = self.few_shot.channel_template
            if (
                template.count("{input}") != 1
                or template.count("{label}") != 1
                or template.index("{label}") > template.index("{input}")
            ):
                raise ValueError("task.few_shot.channel_template: write {label} once, then {input} once after it")
        if self.kind == "classify":
            if len(self.labels) < 2:
                raise ValueError("task.labels: a classify task needs at least 2 labels")
            names = [lab.name for lab in self.labels]
            if len(set(names)) != len(names):
                raise ValueError("task.labels: label names must be unique")
            owner: dict[str, str] = {}
            for lab in self.labels:
                for word in lab.verbalizers:
                    # one word scored for two labels gives both the same probability: they cannot be told apart
                    if owner.setdefault(word.strip().casefold(), lab.name) != lab.name:
                        raise ValueError(
                            f"task.labels: the word {word!r} is given to both {owner[word.strip().casefold()]!r} and "
                            f"{lab.name!r}; give each label its own words"
                        )
            if self.calibrate and not self.content_free_inputs:
                raise ValueError(
                    "task.content_free_inputs is empty while task.calibrate is true: give at least one "
                    'content-free input (e.g. "N/A"), or set task.calibrate: false'
                )
        return self

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]


class Play(_Model):
    kind: Literal["cost", "latency", "stability", "specialization"] = Field(
        description="Why distil: cost (teacher spend too high), latency (teacher too slow), stability "
        "(own a model that does not change under you), specialization (beat the generalist on a domain)."
    )
    trigger: str = Field(
        "",
        description="The trigger in words: the evidence that this play is worth running (e.g. 'API bill "
        "of $4k/month on ticket routing').",
    )


class Roles(_Model):
    """Who does what. A person may be written as a plain name or as ``{name: quinn, key: "ed25519:..."}``;
    the keys end up in ``keys`` (name -> public key), and when any is set every signed act needs one."""

    sponsor: str = Field(min_length=1, description="Owns the outcome; locks the gate.")
    driver: str = Field(min_length=1, description="Builds the student: runs generate, curate, train, evaluate.")
    validator: str = Field(
        min_length=1, description="Signs the ship / iterate / kill decision; must not be the driver."
    )
    operator: str = Field("", description="Runs the student after launch: serving, monitoring, refreshes.")
    keys: dict[str, str] = Field(
        default_factory=dict,
        description="Public signing keys by person (`distil keys init --as NAME` prints one). When set, gate locks, "
        "decisions and other acts of people are signed, and `--as NAME` must hold NAME's private key.",
    )

    @model_validator(mode="before")
    @classmethod
    def _people_with_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        keys = dict(out.get("keys") or {}) if isinstance(out.get("keys") or {}, dict) else out["keys"]
        for role in ("sponsor", "driver", "validator", "operator"):
            person = out.get(role)
            if isinstance(person, dict):
                if set(person) - {"name", "key"} or not isinstance(person.get("name"), str):
                    raise ValueError(f'roles.{role}: write a name, or {{name: NAME, key: "ed25519:..."}}')
                out[role] = person["name"]
                if person.get("key") is not None and isinstance(keys, dict):
                    keys[person["name"]] = person["key"]
        if keys or "keys" in out:
            out["keys"] = keys
        return out

    @field_validator("sponsor", "driver", "validator", "operator")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return person_name(value)

    @field_validator("keys")
    @classmethod
    def _public_keys(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, key in value.items():
            if not _PUBLIC_KEY.match(key):
                raise ValueError(
                    f"roles.keys.{name}: expected ed25519:<base64 of 32 bytes> (from `distil keys init`), got "
                    f"{key[:24]!r}"
                )
            out[person_name(name, f"roles.keys.{name}")] = key
        return out

    @model_validator(mode="after")
    def _validator_is_not_driver(self) -> Roles:
        if same_person(self.validator, self.driver):
            raise ValueError("roles.validator must differ from roles.driver")
        validator_key, driver_key = self.key_of(self.validator), self.key_of(self.driver)
        if validator_key is not None and validator_key == driver_key:
            raise ValueError("roles.validator holds the same key as roles.driver; the validator must be another person")
        return self

    def key_of(self, name: str) -> str | None:
        """The public key the spec gives ``name`` (compared as names are), or None."""
        return next((key for who, key in self.keys.items() if same_person(who, name)), None)


# --- teachers --------------------------------------------------------------------------------------

_SOURCE = re.compile(r"^(gguf|hf|openai|random):.+$")


class Licence(_Model):
    id: str = Field(
        "",
        description="The licence's id in distil's registry (`distil licence list`), e.g. llama-3.1; empty: "
        "matched by name. A known licence lets `distil check` propose the verdict and the duties the student inherits.",
    )
    name: str = Field("", description="Licence name, e.g. Apache-2.0, or the provider's terms of service.")
    terms: str = Field("", description="URL of the terms, or their text.")
    distillation_permitted: Literal["yes", "conditional", "no", "unknown"] = Field(
        "unknown",
        description="Do the terms allow training another model on this teacher's outputs? conditional: yes, "
        "under conditions the student must meet (the registry lists them).",
    )
    reviewed_by: str = Field("", description="Who read the terms.")
    reviewed_at: dt.date | None = Field(None, description="When the terms were read (YYYY-MM-DD).")

    @field_validator("distillation_permitted", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare yes/no as a boolean.
        if value is True:
            return "yes"
        if value is False:
            return "no"
        return value


class TeacherSpec(_Model):
    id: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="Short name used in records and the ledger."
    )
    source: str = Field(
        description="Where the teacher comes from: gguf:<package or path>#<file> | hf:<local path> | "
        "openai:<base url>#<model> | random:<config json path> (tests)."
    )
    licence: Licence | None = Field(
        None, description="The teacher's licence terms; required before any data is collected."
    )
    api_key_env: str = Field(
        "",
        description="Name of the environment variable holding the API key (openai sources). The key itself is never "
        "written.",
    )
    max_concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once (openai sources).")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Per-request timeout in seconds (openai sources).")
    top_logprobs: int = Field(20, ge=0, le=20, description="How many top logprobs to ask an API teacher for.")
    batch: bool = Field(
        False,
        description="Send this API teacher's calls (labelling, rationales, writing) through the OpenAI Batch API: "
        "one JSONL upload and batch per call, polled, priced at batch_discount off; the batch id is "
        "recorded in the ledger, so a restarted command polls it rather than paying again (openai sources).",
    )
    batch_poll_s: float = Field(30.0, gt=0, le=3600, description="Seconds between polls of a running batch.")
    batch_discount: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The share of cost.teacher_per_1m_requests a Batch API call saves (OpenAI: 0.5): a call of this "
        "teacher with batch: true costs the rest when it labels or writes data. Serving traffic is priced in full.",
    )
    weight: float = Field(
        1.0,
        gt=0,
        description="This teacher's weight when data.teachers combines several teachers' label distributions.",
    )
    batch_wait_s: float = Field(
        86_400.0,
        gt=0,
        description="How long one command waits for a batch before stopping with its id (run it again to pick the "
        "batch up); the Batch API's completion window is 24 h.",
    )
    write_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision a local teacher writes synthetic inputs in (sampled text, where precision hardly "
        "matters; labels, scores and answers are always float32). auto: bfloat16 on a GPU or a CPU with native bf16 "
        "instructions, else float32.",
    )
    threads: int | Literal["auto"] = Field(
        "auto",
        description="CPU threads a local teacher's forward passes use. auto: before each batch, one per core the "
        "other processes on the machine left free since the last batch, at least one (on two busy cores, two "
        "threads labelled two to three times slower than one). Never changes an answer beyond float rounding.",
    )

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError(f"must be auto or a count from 1 to 1024, got {value}")
        return value

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not _SOURCE.match(value):
            raise ValueError(f"must start with gguf:, hf:, openai: or random: followed by a location, got {value!r}")
        return value

    @model_validator(mode="after")
    def _batch_needs_an_api(self) -> TeacherSpec:
        if self.batch and self.scheme != "openai":
            raise ValueError(f"batch: true needs an openai: source, got {self.scheme}: (teacher {self.id!r})")
        return self

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]


# --- student ---------------------------------------------------------------------------------------


class StudentSpec(_Model):
    """The student: a causal LM (answers with a label word or text) or an encoder with a classification head.

    - ``kind: causal`` (default): ``init: teacher-layers:N``, a ``config`` or a local ``path``.
    - ``kind: encoder`` (classify tasks): any local Hugging Face encoder folder as ``path`` (BERT family),
      or no ``path`` for the embedded all-MiniLM-L6-v2; or a fresh one from a ``config`` (with a ``tokenizer``
      folder). It gets a classification head over the task's labels and learns the teacher's label
      distribution, so its tokenizer need not match the teacher's.
    """

    kind: Literal["causal", "encoder"] = Field(
        "causal",
        description="causal: a causal LM (the teacher's family, a config or a path); encoder: a local encoder (BERT "
        "family) with a classification head over the labels, classify tasks only (no path: the embedded "
        "all-MiniLM-L6-v2).",
    )
    init: str | None = Field(
        "teacher-layers:6",
        description="teacher-layers:<N>: the teacher's architecture with N of its layers, evenly spread, copied in "
        "(causal students).",
    )
    config: dict[str, Any] | None = Field(
        None, description="Any transformers config (dict) for a freshly initialised student."
    )
    path: str | None = Field(
        None, description="A local checkpoint folder to start from (encoder: any local encoder folder)."
    )
    lora: bool = Field(
        False, description="Train LoRA adapters (peft) instead of all weights; merged into the saved student."
    )
    size_max_params: int | None = Field(None, gt=0, description="Size target: most parameters the student may have.")

    @field_validator("init")
    @classmethod
    def _init_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"teacher-layers:[1-9][0-9]*", value):
            raise ValueError(f"must look like teacher-layers:<N> with N ≥ 1, got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in ("init", "config", "path") if data.get(k) is not None]
            if len(given) > 1:
                raise ValueError(f"student: give one of init, config, path (got {', '.join(given)})")
            if data.get("kind") == "encoder" and "init" in given:
                raise ValueError(
                    "student.init teacher-layers:N builds a causal LM from the teacher; an encoder student takes "
                    "path (a local encoder folder; none: the embedded all-MiniLM-L6-v2) or config"
                )
            if (given and given[0] != "init") or data.get("kind") == "encoder":
                data = {**data, "init": None}
        return data

    @property
    def is_encoder(self) -> bool:
        return self.kind == "encoder"

    def describe(self) -> str:
        """One line for `distil check`: the kind and where the student comes from."""
        if self.is_encoder:
            source = "config" if self.config else (f"path {self.path}" if self.path else "embedded all-MiniLM-L6-v2")
            return f"encoder ({source})" + (", LoRA" if self.lora else "")
        return (self.init or ("config" if self.config else f"path {self.path}")) + (", LoRA" if self.lora else "")


# --- data ------------------------------------------------------------------------------------------


class SliceRule(_Model):
    keywords: list[str] = Field(
        default_factory=list,
        description="The input gets this value when it contains any of these words (case-insensitive).",
    )
    min_words: int | None = Field(None, ge=0, description="…or when it has at least this many words.")
    max_words: int | None = Field(None, ge=0, description="…or when it has at most this many words.")

    @property
    def is_catch_all(self) -> bool:
        """``{}``: a value no text matches; it is given only when nothing else decides (see SliceSpec)."""
        return not self.keywords and self.min_words is None and self.max_words is None


class SliceSpec(_Model):
    """A dimension the evaluation is broken down by. How an item gets its value, first that applies:

    1. a tag the item carries: ``tags`` in its file, the column ``from_field`` names (or one of ``data.fields.tags``),
       or, for an input the teacher wrote, the value shared by all the seeds it was written from;
    2. the first value (in the order written) whose rule matches the text;
    3. ``default``, else the last value (write it as ``{}``, a catch-all), else ``unknown``.

    `distil curate` reports how many items matched no rule, so a catch-all taking most items is seen.
    """

    name: str = Field(min_length=1, description="Slice dimension, e.g. tone.")
    values: dict[str, SliceRule] = Field(
        default_factory=dict,
        description="Each value of the slice and the rule that recognises it in the text (keywords, min_words, "
        "max_words); {} matches nothing and is the catch-all when written last. With from_field the values may be "
        "left out: they are those the files give.",
    )
    default: str | None = Field(
        None, description="Value given when no tag and no rule decides (default: the last value)."
    )
    from_field: str | None = Field(
        None,
        description="A column of the seed and gold files whose value is this slice's value (e.g. category); "
        "teacher-written inputs inherit it from the seeds they were written from.",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return plain_text(value)

    @model_validator(mode="after")
    def _default_is_a_value(self) -> SliceSpec:
        if not self.values and self.from_field is None:
            raise ValueError(
                f"slice {self.name!r} needs at least one value, or from_field naming the column that holds it"
            )
        for value in self.values:
            plain_text(value, f"data.slices[{self.name}].values")
        if self.default is not None and self.values and self.default not in self.values:
            raise ValueError(f"default {self.default!r} is not one of the slice's values")
        return self

    @property
    def fallback(self) -> str:
        """The value an item gets when no tag and no rule decides."""
        return self.default or (list(self.values)[-1] if self.values else "unknown")


class FieldMap(_Model):
    """Which column of the seed and gold files holds what, for files whose columns are not named input / label."""

    input: str = Field("input", min_length=1, description="The column holding the input text.")
    label: str = Field("label", min_length=1, description="The column holding the label a person gave (classify).")
    tags: list[str] = Field(
        default_factory=list,
        description="Further columns read as slice tags, each under its own name (e.g. [category]); a slice with "
        "from_field reads its column without being listed here.",
    )


class Filters(_Model):
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="Drop examples whose teacher max probability is below this."
    )
    min_margin: float = Field(
        0.0, ge=0, le=1, description="Drop examples whose top-1 minus top-2 probability is below this."
    )
    max_entropy: float | None = Field(None, ge=0, description="Drop examples whose label entropy (nats) is above this.")
    min_words: int = Field(
        0, ge=0, description="Drop teacher-written inputs (synthetic, targeted) with fewer words than this."
    )
    min_letter_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Drop teacher-written inputs in which letters are less than this share of the non-space "
        "characters (timestamps, IDs, number runs).",
    )
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity of word shingles above which two inputs are near-duplicates."
    )
    semantic_duplicates: bool = Field(
        False, description="Also drop semantic near-duplicates (all-MiniLM-L6-v2 cosine)."
    )
    semantic_threshold: float = Field(
        0.95, gt=0, le=1, description="Cosine similarity above which two inputs are semantic duplicates."
    )
    max_teacher_disagreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="With several teachers (data.teachers): set aside examples whose teachers disagree more than "
        "this (the weighted Jensen-Shannon divergence of their label distributions over its maximum, in [0, 1]).",
    )
    disagreement_action: Literal["drop", "probe"] = Field(
        "drop",
        description="What max_teacher_disagreement does with such an example: drop it, or keep it for the probe "
        "pool (labelled, never trained on).",
    )
    min_per_slice: int = Field(5, ge=0, description="Slices with fewer curated examples than this are flagged.")
    min_per_label: int = Field(5, ge=0, description="Labels with fewer curated examples than this are flagged.")
    balance: Literal["none", "oversample"] = Field(
        "none", description="Oversample rare labels up to the most common one."
    )


class DataSpec(_Model):
    seeds: str = Field(
        "seeds.jsonl", description="Seed inputs (JSONL or CSV with an `input` column; optional `label`, `tags`)."
    )
    gold: str | None = Field(
        None, description="Hand-labelled gold set (same format, `label` required), never trained on."
    )
    fields: FieldMap = Field(
        default_factory=FieldMap,
        description="Which columns of the seed and gold files hold the input, the label and slice tags.",
    )
    synthetic_budget: int = Field(0, ge=0, le=1_000_000, description="How many synthetic inputs the teacher writes.")
    teachers: list[str] = Field(
        default_factory=list,
        description="Ids of the teachers that label every input together (classify tasks); empty: the first "
        "teacher alone. Each answer is kept per record; the first one listed writes synthetic inputs.",
    )
    combine: Literal["mean", "product"] = Field(
        "mean",
        description="How data.teachers' label distributions become the record's: mean — their weighted mean; "
        "product — a product of experts (the weighted geometric mean, renormalised).",
    )
    synthetic: Literal["teacher", "munge", "none"] = Field(
        "teacher",
        description="How synthetic inputs are made: the teacher writes them, or munge (MUNGE for tabular seeds, "
        "word-level variants of text seeds).",
    )
    synthetic_style: Literal["auto", "list", "chat"] = Field(
        "auto",
        description="How the teacher is asked for a synthetic input: list (it continues a list of seeds under "
        "data.synthetic_header; suits small local models), chat (it is asked in words; suits instruction-following "
        "API models), auto (list for local teachers, chat for API teachers).",
    )
    synthetic_header: str = Field(
        "Examples labelled {label}:",
        min_length=1,
        description="The line above the seeds in a list-style synthetic prompt; {label} is the wanted label (dropped "
        "for tasks without labels).",
    )
    rationales: bool = Field(False, description="Ask the teacher for a rationale with each label.")
    filters: Filters = Field(default_factory=Filters, description="Curation filters.")
    slices: list[SliceSpec] = Field(default_factory=list, description="Slices reported and gated separately.")
    split: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1},
        description="Fractions of curated data per split.",
    )
    probe: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of the curated data outside the test split set aside as the probe pool (probe.parquet): "
        "teacher-labelled, never trained on; `distil iterate` mines failures there and in validation, never in test "
        "or gold.",
    )
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="Random seed for sampling and splits, in [0, 2**32).")

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != {"train", "validation", "test"}:
            raise ValueError("must have exactly the keys train, validation, test")
        if any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be ≥ 0 and sum to 1, got {sum(value.values()):.3f}")
        if value["test"] == 0:
            raise ValueError(
                "test is 0: the student would be trained with nothing held out to evaluate it on; give "
                "the test split a share, e.g. 0.1"
            )
        return value


# --- gate ------------------------------------------------------------------------------------------


class Gate(_Model):
    """Success thresholds, locked in the ledger before anything is built. Unset thresholds are not checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # .inf passes every bound

    fidelity_min: float | None = Field(
        None, ge=0, le=1, description="Student top-1 agreement with the teacher on held-out data."
    )
    quality_min_vs_teacher: float | None = Field(
        None, ge=0, le=2, description="Student quality (accuracy / F1) as a fraction of the teacher's."
    )
    per_slice_fidelity_min: float | None = Field(None, ge=0, le=1, description="Agreement floor on every slice.")
    min_label_recall: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Recall floor on every label: of each label's items, the share the student gives that label "
        "(against the gold set's labels where there is one, else the teacher's). Fails a student that predicts one "
        "label, or never predicts one.",
    )
    p95_latency_max_vs_teacher: float | None = Field(
        None, gt=0, le=10, description="Student p95 latency at batch 1 as a fraction of the teacher's."
    )
    p95_latency_max_ms: float | None = Field(None, gt=0, description="Absolute p95 latency target in milliseconds.")
    size_max_vs_teacher: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Student parameters as a fraction of the teacher's (parameters, not bytes: evaluate reports each "
        "model's bytes on disk and in memory beside it).",
    )
    payback_months_max: float | None = Field(
        None, gt=0, description="Build cost must be paid back by savings within this many months."
    )
    beat_baseline: bool = Field(
        False, description="The distilled student must beat the hard-label baseline on agreement."
    )
    retraining_path: str | None = Field(
        None, description="Stability play: the documented way the student is retrained."
    )
    max_iterations: int = Field(
        3, ge=1, le=100, description="Rounds of `distil iterate` before the decision must be ship or kill."
    )
    size_max_bytes: int | None = Field(
        None,
        gt=0,
        description="Largest student size on disk, bytes: the smallest evaluated export "
        "(`distil export --quantize int8`) or the stored student must fit.",
    )


# --- cost ------------------------------------------------------------------------------------------


class Cost(_Model):
    """Prices and volume for the payback estimate; locked with the gate, since they decide the payback threshold.

    Payback is computed from what was measured (see ``distil.evaluate.cost``): each model's serving throughput on
    this machine times ``machine_hour_price``, the share the router escalates to the teacher, and the build cost the
    ledger recorded (teacher calls, training time) plus ``build_cost``.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False
    )  # .inf prices pay back in 0 months
    currency: str = Field("USD", description="Currency of every price below.")
    teacher_per_1m_requests: float = Field(
        0.0,
        ge=0,
        description="What 1M requests to the teacher cost (an API teacher's price per call × 1M); "
        "0: a local teacher, priced by its measured throughput × machine_hour_price.",
    )
    student_per_1m_requests: float = Field(
        0.0,
        ge=0,
        description="Your estimate of what 1M requests to the student cost, shown beside the measured figure; "
        "payback uses the measured one (throughput on this machine × machine_hour_price).",
    )
    monthly_requests: int = Field(0, ge=0, description="Requests per month the student would take.")
    build_cost: float = Field(
        0.0,
        ge=0,
        description="Fixed one-off cost added to the build cost the ledger records (people, review, anything "
        "not recorded); teacher calls and training time are summed from the ledger, so leave them out.",
    )
    machine_hour_price: float = Field(
        1.0,
        ge=0,
        description="What one hour of the machine that serves and trains costs (default 1.0, roughly an "
        "on-demand 8-vCPU cloud machine); serving and training time are priced with it.",
    )

    @field_validator("currency")
    @classmethod
    def _plain_currency(cls, value: str) -> str:
        return plain_text(value)


# --- training --------------------------------------------------------------------------------------


class OptimizerSpec(_Model):
    """AdamW and its learning-rate schedule."""

    lr: float = Field(5e-4, gt=0, le=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.1, ge=0, le=1, description="Share of optimiser steps spent warming the learning rate up, before cosine decay."
    )


class DistillationSpec(_Model):
    """What the distilled student learns from the teacher (the baseline learns from hard labels only)."""

    loss: Literal["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tv", "uld"] = Field(
        "forward_kl",
        description="Divergence between teacher and student distributions (jsd uses beta, skew_* use skew_alpha). "
        "uld (generate tasks): Universal Logit Distillation, sorted probabilities compared over tokens aligned by "
        "their text, for a teacher whose tokenizer differs; a local teacher's is used whenever the tokenizers differ, "
        "an API teacher's top_logprobs go through it when asked.",
    )
    temperature: float = Field(
        2.0, gt=0, le=20, description="Softmax temperature of the KD term; the loss is scaled by T²."
    )
    alpha: float = Field(
        0.0, ge=0, le=1, description="Weight of hard-label cross-entropy in α·CE + (1-α)·KD (0: pure KD)."
    )
    beta: float = Field(0.5, ge=0, le=1, description="β of the generalized JSD (0: forward KL, 1: reverse KL).")
    skew_alpha: float = Field(0.1, ge=0, le=1, description="Mixing weight α of the skew KL losses.")
    topk_cache_k: int = Field(
        32,
        ge=1,
        le=1024,
        description="How many teacher top-k logprobs the offline cache keeps per token (generate tasks).",
    )
    rationale_weight: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Classify: weight λ of the rationale target (Distilling step-by-step: L_label + λ·L_rationale) "
        "on records that carry a teacher rationale (needs data.rationales: true; 0: unused).",
    )


class OnPolicySpec(_Model):
    """On-policy distillation (GKD): on some steps the student writes the answers and the teacher scores them."""

    fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="GKD λ: share of optimiser steps where the student samples and the local teacher scores "
        "(generate tasks; 0: off-policy only).",
    )
    temperature: float = Field(
        1.0, ge=0, le=10, description="Sampling temperature of the student's on-policy completions (0: greedy)."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=4096, description="Longest on-policy completion (default: task.max_new_tokens)."
    )


class FeatureSpec(_Model):
    """Classify: matching the local teacher's hidden states at the answer position (needs an hf: or gguf: teacher)."""

    weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Weight of hidden-state matching against the teacher at the answer position, through a learned "
        "projection (0: unused).",
    )
    kind: Literal["mse", "cosine"] = Field(
        "mse", description="Hidden-state matching: mean squared error or 1 - cosine similarity."
    )
    layers: dict[int, int] | None = Field(
        None,
        description="Layer map for hidden-state matching, student hidden-state index -> teacher index (default: last "
        "-> last).",
    )
    relation_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Weight of relation-based KD between the pooled answer-position states of a micro-batch (0: "
        "unused).",
    )
    relation_kind: Literal["distance_angle", "similarity"] = Field(
        "distance_angle", description="Relation KD: pairwise distances and angles (RKD) or similarity-matrix matching."
    )

    @property
    def wants_teacher_states(self) -> bool:
        return self.weight > 0 or self.relation_weight > 0


# Keys of the flat TrainSpec that specs written before the groups still use: flat name -> (group, field).
FLAT_TRAIN_KEYS: dict[str, tuple[str, str]] = {
    "lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"),
    "warmup_ratio": ("optimizer", "warmup_ratio"),
    "loss": ("distillation", "loss"),
    "temperature": ("distillation", "temperature"),
    "alpha": ("distillation", "alpha"),
    "beta": ("distillation", "beta"),
    "skew_alpha": ("distillation", "skew_alpha"),
    "topk_cache_k": ("distillation", "topk_cache_k"),
    "rationale_weight": ("distillation", "rationale_weight"),
    "on_policy_lambda": ("on_policy", "fraction"),
    "on_policy_temperature": ("on_policy", "temperature"),
    "on_policy_max_new_tokens": ("on_policy", "max_new_tokens"),
    "feature_weight": ("features", "weight"),
    "feature_kind": ("features", "kind"),
    "feature_layers": ("features", "layers"),
    "relation_weight": ("features", "relation_weight"),
    "relation_kind": ("features", "relation_kind"),
}


class TrainSpec(_Model):
    """How the student is trained (`distil train`); the defaults suit a small classify student on CPU."""

    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(8, ge=1, le=4096, description="Examples per micro-batch (per process).")
    grad_accum: int = Field(1, ge=1, le=1024, description="Micro-batches per optimiser step.")
    max_length: int = Field(
        256, ge=8, le=65536, description="Longest tokenised example; longer inputs are truncated from the left."
    )
    chunk_size: int = Field(
        1024, ge=1, description="Positions per chunk of the fused vocabulary projection + loss (generate tasks)."
    )
    patience: int = Field(
        3,
        ge=0,
        le=1000,
        description="Evaluations without a gain in validation fidelity before stopping early (0: never stop early).",
    )
    keep: Literal["best", "last"] = Field(
        "best",
        description="The weights a run ends with: those of the evaluation with the best validation fidelity, or the "
        "last step's (with a validation split of a few dozen examples the best evaluation is often picked by chance).",
    )
    eval_every: int = Field(0, ge=0, description="Optimiser steps between validation passes (0: once per epoch).")
    seed: int = Field(
        0, ge=0, lt=SEED_LIMIT, description="Random seed for initialisation, shuffling and dropout, in [0, 2**32)."
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: forward and backward under bfloat16 autocast (weights and optimiser stay fp32; softmaxes "
        "stay fp32).",
    )
    compile: bool = Field(
        False, description="Compile the student's decoder with torch.compile (pays off on long GPU runs)."
    )
    freeze_embeddings: bool = Field(
        False,
        description="Keep the token embeddings (and an output head tied to them) as initialised: a third fewer "
        "weights to update for a teacher-layers student of a small model, and fewer to overfit with a few hundred "
        "examples.",
    )
    report_to: Literal["none", "tensorboard", "mlflow"] = Field(
        "none",
        description="Where losses, learning rate, validation fidelity and the final evaluation are also logged: "
        "tensorboard (event files in the run folder's tensorboard/) or mlflow (a file store in the run folder's "
        "mlruns/, or $MLFLOW_TRACKING_URI when set); the library is needed only when chosen.",
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="AdamW and its learning-rate schedule.")
    distillation: DistillationSpec = Field(
        default_factory=DistillationSpec, description="The KD loss and what it mixes in."
    )
    on_policy: OnPolicySpec = Field(
        default_factory=OnPolicySpec, description="On-policy distillation (GKD), generate tasks."
    )
    features: FeatureSpec = Field(
        default_factory=FeatureSpec, description="Hidden-state and relation KD, classify tasks."
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_keys_into_groups(cls, data: Any) -> Any:
        """Specs written before the groups keep loading: ``train.lr`` becomes ``train.optimizer.lr``, and so on."""
        if not isinstance(data, dict) or not any(key in FLAT_TRAIN_KEYS for key in data):
            return data
        data = dict(data)
        for flat, (group, name) in FLAT_TRAIN_KEYS.items():
            if flat not in data:
                continue
            value = data.pop(flat)
            section = data.get(group) or {}
            section = section.model_dump() if isinstance(section, BaseModel) else dict(section)
            if name in section and section[name] != value:
                raise ValueError(f"train.{flat} and train.{group}.{name} are both set; keep train.{group}.{name}")
            data[group] = {**section, name: value}
        return data


def train_fits_the_task(spec: Spec) -> None:
    """The combinations of train settings, task and teacher that cannot work, refused at load (so at `distil check`)."""
    train, kind, teacher = spec.train, spec.task.kind, spec.teacher()
    local = teacher.scheme in ("hf", "gguf")
    if train.on_policy.fraction > 0 and kind != "generate":
        raise ValueError(
            "train.on_policy.fraction applies to generate tasks; a classify student already learns the teacher's "
            "whole label distribution (set it to 0)"
        )
    if train.on_policy.fraction > 0 and not local:
        raise ValueError(
            f"train.on_policy.fraction needs a local teacher (hf: or gguf:) to score the student's samples; "
            f"teacher {teacher.id!r} is {teacher.scheme}: (set it to 0: its top-k and text are used off-policy)"
        )
    if train.distillation.loss == "uld":
        if kind != "generate":
            raise ValueError(
                "train.distillation.loss uld compares token distributions of text; a classify student learns the "
                "teacher's label distribution (choose forward_kl or another divergence)"
            )
        if not local and not teacher.top_logprobs:
            raise ValueError(
                f"train.distillation.loss uld needs the teacher's distribution at each of its tokens; teacher "
                f"{teacher.id!r} is {teacher.scheme}: with top_logprobs 0 (ask for top_logprobs, use a local hf: or "
                "gguf: teacher, or another loss)"
            )
        if train.on_policy.fraction > 0:
            raise ValueError(
                "train.distillation.loss uld reads the teacher's offline cache; on-policy steps score by token id "
                "and need the same tokenizer (set train.on_policy.fraction to 0)"
            )
    classify_only = {
        "train.features.weight": train.features.weight,
        "train.features.relation_weight": train.features.relation_weight,
        "train.distillation.rationale_weight": train.distillation.rationale_weight,
    }
    for name, value in classify_only.items():
        if value > 0 and kind != "classify":
            raise ValueError(f"{name} applies to classify tasks (set it to 0 for a generate task)")
    if train.features.wants_teacher_states and not local:
        raise ValueError(
            f"train.features.weight / relation_weight need the teacher's hidden states; teacher {teacher.id!r} is "
            f"{teacher.scheme}: (set them to 0, or use a local hf: or gguf: teacher)"
        )
    if spec.student.is_encoder:
        encoder_fits_the_task(spec)
    if train.distillation.rationale_weight > 0 and not spec.data.rationales:
        raise ValueError(
            "train.distillation.rationale_weight needs rationales to learn from: set data.rationales: true "
            "(the teacher writes one with each label), or set the weight to 0"
        )


def encoder_fits_the_task(spec: Spec) -> None:
    """An encoder student has a head over the labels and no vocabulary: it classifies, and learns from labels only."""
    train = spec.train
    if spec.task.kind != "classify":
        raise ValueError(
            "student.kind encoder applies to classify tasks (an encoder has a head over the labels and writes "
            "no text); use kind: causal for a generate task"
        )
    if train.features.wants_teacher_states:
        raise ValueError(
            "train.features.weight / relation_weight read the teacher's states on the student's tokens; an encoder "
            "student learns the teacher's label distribution only (set them to 0)"
        )
    if train.distillation.rationale_weight > 0:
        raise ValueError(
            "train.distillation.rationale_weight trains the student to write the teacher's rationale; an encoder "
            "student writes no text (set it to 0)"
        )


# --- after launch: router and maintenance ------------------------------------------------------------


class RouterSpec(_Model):
    """Which model answers a request: a specialist student when it is confident, else the generalist."""

    specialists: list[str] = Field(
        default_factory=list,
        description="Run ids of the students that serve (one per task); empty: the run `distil serve` is given.",
    )
    generalist: str | None = Field(
        None, description="Teacher id that takes escalated requests (default: the first teacher)."
    )
    threshold: float | Literal["calibrate"] = Field(
        "calibrate",
        description="Student max probability at or above which the student answers; 'calibrate' picks the lowest "
        "threshold on the validation split that keeps routed fidelity at or above target_fidelity.",
    )
    target_fidelity: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Routed fidelity floor used by 'calibrate' (default: gate.fidelity_min, else 0.95).",
    )

    @field_validator("specialists")
    @classmethod
    def _plain_run_ids(cls, value: list[str]) -> list[str]:
        for run_id in value:
            if problem := run_id_problem(run_id):
                raise ValueError(problem)
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold_range(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 <= value <= 1.0:
            raise ValueError(f"must be in [0, 1] or 'calibrate', got {value}")
        return value


class Maintenance(_Model):
    """Who runs the student after launch, how often it is refreshed and when monitoring raises an alert."""

    operator: str = Field("", description="Who answers alerts and refreshes the student (default: roles.operator).")
    refresh_days: int = Field(
        90, ge=1, le=3650, description="Refresh cadence: days between retrainings on fresh traffic."
    )
    drift_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Student-teacher agreement on traffic below which `distil monitor` alerts (default: "
        "gate.fidelity_min).",
    )
    drift_alpha: float = Field(
        0.01, gt=0, lt=1, description="Significance level of the embedding-drift permutation test."
    )
    traffic_sample_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of served requests written to the traffic log (chosen at random; monitor and iterate need a "
        "few hundred a week, not every request).",
    )
    traffic_retention_days: int | None = Field(
        30,
        ge=1,
        le=3650,
        description="Traffic shards older than this many days are deleted by `distil serve` at start and by `distil "
        "monitor` (null: kept until you delete them).",
    )
    store_inputs: bool = Field(
        True,
        description="Keep the request text (and generated answers) in the traffic log; false: only the route, the "
        "label distribution and the confidence, so monitor cannot ask the teacher about them and nothing typed is "
        "kept.",
    )
    redact: bool = Field(
        True,
        description="Mask personal data in the text kept: e-mails, phones, cards, IBANs, IP addresses, US SSNs "
        "(Presidio's pattern recognisers), names after a cue, street addresses, postcodes and runs of 6+ digits. "
        "Names with no cue are missed.",
    )


class ServeSpec(_Model):
    """How `distil serve` holds under load: bounded queues per model, deadlines, connection limits."""

    queue_depth: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Requests waiting for or running on the student at once; one more is refused at once with 429 "
        "and Retry-After.",
    )
    deadline_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="Longest a request waits for the student's answer; past it the request is refused with 429 and "
        "work not yet started is dropped.",
    )
    teacher_queue_depth: int = Field(
        8,
        ge=1,
        le=100_000,
        description="Escalations waiting for or running on the teacher at once; past it an escalation is answered by "
        "the student, marked student_fallback.",
    )
    teacher_deadline_s: float = Field(
        0.8,
        gt=0,
        le=600,
        description="Longest an escalation waits for the teacher before the student's answer is given instead "
        "(marked student_fallback).",
    )
    max_loop_lag_s: float = Field(
        0.05,
        gt=0,
        le=60,
        description="Event-loop lag (how late a timer runs: the wait every request, answer and probe has for its turn) "
        "past which new model requests get 429 and Retry-After before their body is parsed, and /readyz says busy.",
    )
    max_batch: int = Field(32, ge=1, le=4096, description="Most inputs one forward pass of a model takes.")
    threads: int | None = Field(
        1,
        ge=1,
        le=1024,
        description="CPU threads a local model's forward pass uses (torch.set_num_threads); null: torch's default, "
        "one per core. 1 leaves the other cores to the event loop and the other model: on two busy cores a tiny "
        "student's pass ran 30 times slower on two threads than on one (they wait on each other).",
    )
    batch_wait_s: float = Field(
        0.002, ge=0, le=1, description="How long a pass waits for more requests to share it (micro-batching)."
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 30, description="Request bodies larger than this get 413 (`--max-body-bytes`)."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A request body not received in full within this many seconds gets 408."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A connection that has not sent a whole request line and headers within this many seconds of "
        "starting it is closed (slow clients cannot hold connections).",
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, le=1 << 20, description="Most bytes of a request line and headers; larger ones get 400."
    )
    keep_alive_s: float = Field(5.0, gt=0, le=600, description="Idle seconds before a kept-alive connection is closed.")
    max_connections: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Open connections and requests at once; past it new requests get 503 until some close.",
    )


# --- the whole spec --------------------------------------------------------------------------------


class Spec(_Model):
    name: str = Field("distil-project", min_length=1, description="Project name, shown in reports.")
    task: Task = Field(description="What the student must do.")
    play: Play = Field(description="Why this distillation is worth doing.")
    roles: Roles = Field(description="Who sponsors, drives, validates and operates.")
    teachers: list[TeacherSpec] = Field(min_length=1, description="Teachers, first one is the default.")
    student: StudentSpec = Field(default_factory=StudentSpec, description="How the student is built.")
    data: DataSpec = Field(default_factory=DataSpec, description="Where inputs come from and how they are curated.")
    gate: Gate = Field(default_factory=Gate, description="Success thresholds, locked before building.")
    cost: Cost = Field(default_factory=Cost, description="Prices and volume for the payback estimate.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="How the student is trained.")
    router: RouterSpec = Field(
        default_factory=RouterSpec, description="Routing between the student and the teacher when serving."
    )
    maintenance: Maintenance = Field(default_factory=Maintenance, description="Operating the student after launch.")
    serve: ServeSpec = Field(
        default_factory=ServeSpec, description="Queues, deadlines and connection limits of `distil serve`."
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return plain_text(value)

    @model_validator(mode="after")
    def _unique_teacher_ids(self) -> Spec:
        ids = [t.id for t in self.teachers]
        if len(set(ids)) != len(ids):
            raise ValueError("teachers: ids must be unique")
        return self

    @model_validator(mode="after")
    def _labelling_teachers_exist(self) -> Spec:
        ids = [t.id for t in self.teachers]
        unknown = [t for t in self.data.teachers if t not in ids]
        if unknown:
            raise ValueError(
                f"data.teachers: no teacher with id {', '.join(map(repr, unknown))} (known: {', '.join(ids)})"
            )
        if len(set(self.data.teachers)) != len(self.data.teachers):
            raise ValueError("data.teachers: each teacher may be listed once")
        if len(self.data.teachers) > 1 and self.task.kind != "classify":
            raise ValueError(
                "data.teachers: several teachers label classify tasks only (their label distributions are combined); "
                "a generate task takes its text from one teacher"
            )
        return self

    @model_validator(mode="after")
    def _train_fits_the_task(self) -> Spec:
        train_fits_the_task(self)
        return self

    def labelling_teachers(self) -> list[TeacherSpec]:
        """The teachers that label the data: data.teachers in order, else the first teacher."""
        return [self.teacher(t) for t in self.data.teachers] or [self.teachers[0]]

    def teacher(self, teacher_id: str | None = None) -> TeacherSpec:
        if teacher_id is None:
            return self.teachers[0]
        for t in self.teachers:
            if t.id == teacher_id:
                return t
        raise SpecError(
            f"teachers: no teacher with id {teacher_id!r}", hint=f"known ids: {', '.join(t.id for t in self.teachers)}"
        )
