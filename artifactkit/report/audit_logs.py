"""Training logs of a submission folder: find them and read, liberally, what the audit
checks. The formats of the public records changed over time (`key:value` header lines,
a `Hyperparameters:` block, the script's own source printed at the top, nvidia-smi
tables, TTT progress lines), so every quantity is one pattern in `LINE_RULES`, a line
no pattern understands is skipped, and sections that are Python source are ignored."""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from artifactkit.errors import InputError, describe

LOG_SUFFIXES = (".log", ".txt")
LOG_SUBFOLDERS = ("", "logs")
TRAINING_VAL = "training_val"  # the name we give the last in-training validation (the logs give none)
EXACT_SUFFIX = "_exact"  # `final_..._exact` repeats `final_...` with more digits
SECTION_RULE = re.compile(r"^={20,}\s*$")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "": 0.001}  # a bare train_time/eval_time is in ms
SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)
BINARY_FRACTION = 0.01  # more undecodable bytes than this and the file is not a text log


@dataclass
class Evaluation:
    name: str
    val_loss: float
    val_bpb: float
    loss_decimals: int
    bpb_decimals: int
    eval_time_s: float | None = None
    step: int | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "val_loss": self.val_loss, "val_bpb": self.val_bpb,
                "eval_time_s": self.eval_time_s, **({"step": self.step} if self.step is not None else {})}


@dataclass
class Timing:
    """A duration the log states together with its own limit, e.g. `x: 1121.0s (must be < 600.0)`."""

    name: str
    seconds: float
    limit: float


@dataclass(eq=False)  # a run is itself: two logs are never the same run
class RunLog:
    path: Path
    copies: list[str] = field(default_factory=list)
    seed: int | None = None  # what the log prints, else what its file name says
    log_seed: int | None = None
    name_seed: int | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    artifact_bytes: int | None = None  # the compressed model ("Serialized model int6+zstd: N bytes")
    total_bytes: int | None = None  # the log's own artifact + code total
    code_bytes_reported: dict[str, int] = field(default_factory=dict)  # "plain" / "uncompressed" / "compressed"
    train_time_s: float | None = None
    stopped_at_cap: bool = False
    steps: int | None = None
    step_avg_s: float | None = None
    calibration_s: float | None = None  # GPTQ Hessians collected from training data after the loop
    total_eval_time_s: float | None = None
    timings: list[Timing] = field(default_factory=list)
    val_tokens: int | None = None
    train_shards: int | None = None
    hyperparameters: dict[str, str] = field(default_factory=dict)
    lines_read: int = 0
    lines_understood: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def headline(self) -> Evaluation | None:
        """The score the log ends on: its last evaluation after training (else the last
        in-training validation)."""
        final = [e for e in self.evaluations if e.name != TRAINING_VAL]
        return final[-1] if final else self.evaluation(TRAINING_VAL)

    @property
    def pre_quant(self) -> Evaluation | None:
        """An explicit pre-quantization evaluation, else the last in-training validation."""
        named = [e for e in self.evaluations if re.search(r"pre[-_ ]?quant", e.name)]
        return named[-1] if named else self.evaluation(TRAINING_VAL)

    @property
    def train_plus_calibration_s(self) -> float | None:
        if self.train_time_s is None:
            return None
        return self.train_time_s + (self.calibration_s or 0.0)

    @property
    def code_bytes_counted_by_log(self) -> int | None:
        """What the log's own total counted as code (total - artifact), else its code line."""
        if self.total_bytes is not None and self.artifact_bytes is not None:
            return self.total_bytes - self.artifact_bytes
        return self.code_bytes_reported.get("plain")

    @property
    def is_run_log(self) -> bool:
        """A run's log prints a seed or an evaluation; a seed in the file name alone is not enough."""
        return self.log_seed is not None or bool(self.evaluations)

    def evaluation(self, name: str) -> Evaluation | None:
        found = [e for e in self.evaluations if e.name == name]
        return found[-1] if found else None

    def to_json(self) -> dict:
        return {
            "log": self.name, "copies": self.copies, "seed": self.seed,
            "headline": self.headline.name if self.headline else None,
            "evaluations": [e.to_json() for e in self.evaluations],
            "artifact_bytes": self.artifact_bytes, "total_bytes": self.total_bytes,
            "code_bytes_reported": self.code_bytes_reported, "train_time_s": self.train_time_s,
            "calibration_s": self.calibration_s, "stopped_at_cap": self.stopped_at_cap, "steps": self.steps,
            "total_eval_time_s": self.total_eval_time_s,
            "timings": [{"name": t.name, "seconds": t.seconds, "limit": t.limit} for t in self.timings],
            "val_tokens": self.val_tokens, "train_shards": self.train_shards,
            "hyperparameters": self.hyperparameters,
            "lines_read": self.lines_read, "lines_understood": self.lines_understood,
        }


def _decimals(text: str) -> int:
    mantissa = text.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def _seconds(value: str, unit: str | None) -> float:
    return round(float(value) * UNIT_SECONDS[unit or ""], 6)


# ---- one handler per kind of line; each returns True when it used the line ----------

EVAL_LINE = re.compile(rf"^(?P<name>.*?)\bval_loss[:=]\s*(?P<loss>{NUMBER})\s+val_bpb[:=]\s*(?P<bpb>{NUMBER})"
                       rf"(?:.*?\beval_time[:=]\s*(?P<time>{NUMBER})\s*(?P<unit>ms|s|m)?)?")
STEP_PREFIX = re.compile(r"^(?:step[:=]?\s*)?(\d+)/(\d+)\s*$")
STOP_LINE = re.compile(rf"stopping_early:\s*(?P<why>\S+).*?train_time[:=]\s*(?P<time>{NUMBER})\s*(?P<unit>ms|s|m)?"
                       r".*?step[:=]\s*(?P<step>\d+)/\d+")
TRAIN_STEP_LINE = re.compile(rf"^(?:step[:=]?\s*)?(?P<step>\d+)/\d+\s.*?\btrain_time[:=]\s*(?P<time>{NUMBER})"
                             rf"\s*(?P<unit>ms|s|m)?(?:.*?\bstep_avg[:=]\s*(?P<avg>{NUMBER})\s*ms)?")
ARTIFACT_LINE = re.compile(r"^Serialized model\s+(?P<what>[^:]+):\s*(?P<bytes>\d+)\s*bytes")
TOTAL_LINE = re.compile(r"^Total submission size\s+(?P<what>[^:]+):\s*(?P<bytes>\d+)\s*bytes")
CODE_LINE = re.compile(r"^Code size(?:\s*\((?P<what>[^)]*)\))?:\s*(?P<bytes>\d+)\s*bytes")
VAL_TOKENS = re.compile(r"(?:^val_tokens[:=]\s*|^val_loader:.*\btokens[:=])(?P<n>\d+)")
TRAIN_SHARDS = re.compile(r"\btrain_shards[:=]\s*(?P<n>\d+)")
CALIBRATION = re.compile(rf"^GPTQ:\s*collected \d+ Hessians in (?P<time>{NUMBER})\s*(?P<unit>ms|s|m)")
TOTAL_EVAL = re.compile(rf"^total_eval_time[:=]\s*(?P<time>{NUMBER})\s*(?P<unit>ms|s|m)")
DECLARED_LIMIT = re.compile(rf"^(?P<name>\w+):\s*(?P<time>{NUMBER})\s*(?P<unit>ms|s|m)\s*"
                            rf"\(must be\s*<=?\s*(?P<limit>{NUMBER})\s*s?\)")
SEED_LINE = re.compile(r"^seed[:=]\s*(?P<seed>\d+)\s*$")
HEADER_PAIR = re.compile(r"(?<![\w/.\-])(?P<key>[A-Za-z_]\w*)[:=](?P<value>[^\s(),]+)")
TRAINING_STARTED = re.compile(r"^\s*(warmup_step|step[:=]?\s*\d|\d+/\d+\s)")
BLOCK_START = re.compile(r"^Hyperparameters:\s*$")
BLOCK_PAIR = re.compile(r"^\s+(?P<key>[A-Za-z_][\w.]*):\s?(?P<value>.*?)\s*$")


def _add_evaluation(run: RunLog, match: re.Match) -> None:
    name = match["name"].strip().rstrip(":,").strip()
    step = None
    step_match = STEP_PREFIX.match(name)
    if step_match:
        name, step = TRAINING_VAL, int(step_match[1])
        run.steps = max(run.steps or 0, step)
    evaluation = Evaluation(name or "val", float(match["loss"]), float(match["bpb"]),
                            _decimals(match["loss"]), _decimals(match["bpb"]),
                            _seconds(match["time"], match["unit"]) if match["time"] else None, step)
    if name == TRAINING_VAL:
        run.evaluations = [e for e in run.evaluations if e.name != TRAINING_VAL]
    elif name.endswith(EXACT_SUFFIX) and run.evaluation(name[: -len(EXACT_SUFFIX)]):
        rounded = run.evaluation(name[: -len(EXACT_SUFFIX)])
        rounded.val_loss, rounded.val_bpb = evaluation.val_loss, evaluation.val_bpb
        rounded.loss_decimals, rounded.bpb_decimals = evaluation.loss_decimals, evaluation.bpb_decimals
        rounded.eval_time_s = rounded.eval_time_s if evaluation.eval_time_s is None else evaluation.eval_time_s
        return
    elif name.endswith(EXACT_SUFFIX):
        evaluation.name = name[: -len(EXACT_SUFFIX)]
    run.evaluations.append(evaluation)


def _read_step(run: RunLog, match: re.Match) -> None:
    run.train_time_s = _seconds(match["time"], match["unit"])
    run.steps = int(match["step"])
    if match["avg"]:
        run.step_avg_s = float(match["avg"]) / 1000.0


def _read_line(run: RunLog, line: str, header_pairs: dict[str, str] | None) -> bool:
    """Apply the line rules; True when the line told us something."""
    stripped = line.strip()
    if match := EVAL_LINE.search(stripped):
        _add_evaluation(run, match)
        if (step := TRAIN_STEP_LINE.match(stripped)) and not run.stopped_at_cap:  # a validation step's clock
            _read_step(run, step)
        return True
    if match := STOP_LINE.search(stripped):
        run.train_time_s = _seconds(match["time"], match["unit"])
        run.steps = int(match["step"])
        run.stopped_at_cap = "wallclock" in match["why"]
        return True
    if match := TRAIN_STEP_LINE.match(stripped):
        if not run.stopped_at_cap:
            _read_step(run, match)
        return True
    for pattern, key in ((ARTIFACT_LINE, "artifact_bytes"), (TOTAL_LINE, "total_bytes")):
        if match := pattern.match(stripped):
            setattr(run, key, int(match["bytes"]))
            return True
    if match := CODE_LINE.match(stripped):
        run.code_bytes_reported[(match["what"] or "plain").strip().lower()] = int(match["bytes"])
        return True
    if match := CALIBRATION.match(stripped):
        run.calibration_s = _seconds(match["time"], match["unit"])
        return True
    if match := TOTAL_EVAL.match(stripped):
        run.total_eval_time_s = _seconds(match["time"], match["unit"])
        return True
    if match := DECLARED_LIMIT.match(stripped):
        run.timings.append(Timing(match["name"], _seconds(match["time"], match["unit"]), float(match["limit"])))
        return True
    understood = False
    if match := VAL_TOKENS.search(stripped):
        run.val_tokens = int(match["n"])
        understood = True
    if match := TRAIN_SHARDS.search(stripped):
        run.train_shards = int(match["n"])
        understood = True
    if match := SEED_LINE.match(stripped):
        run.seed = int(match["seed"])
        understood = True
    if header_pairs is not None and not stripped.startswith(("|", "+")):
        pairs = {m["key"]: m["value"] for m in HEADER_PAIR.finditer(stripped)}
        if pairs:
            header_pairs.update(pairs)
            understood = True
    return understood


def _is_source_section(lines: list[str]) -> bool:
    """A section that parses as Python with imports, functions or classes is the script's
    own source printed into the log: it holds no results and must not be read as log lines."""
    text = "\n".join(lines)
    if not re.search(r"^\s*(import |from \S+ import |def |class )", text, re.MULTILINE):
        return False
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) for node in tree.body)


def _sections(lines: list[str]) -> list[list[str]]:
    sections, current = [], []
    for line in lines:
        if SECTION_RULE.match(line):
            sections.append(current)
            current = []
        else:
            current.append(line)
    sections.append(current)
    return sections


def parse_log_text(text: str, path: Path) -> RunLog:
    """Everything the audit needs from one log's text. Never fails on a line."""
    run = RunLog(path=path)
    name_match = SEED_IN_NAME.search(path.stem)
    run.name_seed = int(name_match[1]) if name_match else None
    block_open = False
    header_pairs: dict[str, str] | None = {}  # `key:value` lines before the first training line
    header_found: dict[str, str] = {}
    for section in _sections(text.splitlines()):
        if _is_source_section(section):
            continue
        for line in section:
            run.lines_read += 1
            if BLOCK_START.match(line):
                block_open = True
                run.lines_understood += 1
                continue
            if block_open:
                if pair := BLOCK_PAIR.match(line):
                    run.hyperparameters[pair["key"]] = pair["value"]
                    run.lines_understood += 1
                    continue
                block_open = False
            if header_pairs is not None and TRAINING_STARTED.match(line):
                header_found, header_pairs = header_pairs, None
            if _read_line(run, line, header_pairs):
                run.lines_understood += 1
    if not run.hyperparameters:  # no `Hyperparameters:` block: the older `key:value` header
        run.hyperparameters = header_found or header_pairs or {}
    if run.seed is None and run.hyperparameters.get("seed", "").isdigit():
        run.seed = int(run.hyperparameters["seed"])
    run.log_seed = run.seed
    if run.seed is None:
        run.seed = run.name_seed
    return run


def read_log(path: Path) -> RunLog:
    """Read one log file; a binary file is bad input (it is not the run's log)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(describe(path, f"cannot read ({exc.strerror})", "check the file's permissions")) from exc
    text = data.decode("utf-8", errors="replace")
    undecodable = text.count("\ufffd")
    if b"\x00" in data or undecodable > BINARY_FRACTION * max(len(text), 1):
        offset = data.find(b"\x00") if b"\x00" in data else None
        where = f" (NUL byte at offset {offset})" if offset is not None else f" ({undecodable} undecodable bytes)"
        raise InputError(describe(path, f"not a text log: binary data{where}",
                                  "replace it with the run's text log or remove it from the folder"))
    return parse_log_text(text, path)


def find_logs(folder: Path) -> tuple[list[RunLog], list[Path]]:
    """(run logs, other text files that hold no run) in FOLDER and FOLDER/logs.
    Byte-identical copies (e.g. `train.log` beside `train_seed2025.log`) are merged into
    one run that lists its copies; the name with a seed in it is kept."""
    candidates = sorted({path for sub in LOG_SUBFOLDERS for path in (folder / sub).glob("*")
                         if path.suffix.lower() in LOG_SUFFIXES and _is_file(path)})
    by_digest: dict[str, list[Path]] = {}
    for path in candidates:
        by_digest.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path)
    runs, ignored = [], []
    for paths in by_digest.values():
        paths.sort(key=lambda p: (SEED_IN_NAME.search(p.stem) is None, str(p)))
        run = read_log(paths[0])
        if not run.is_run_log:
            ignored.extend(paths)
            continue
        run.copies = [str(p.relative_to(folder)) for p in paths[1:]]
        runs.append(run)
    runs.sort(key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    return runs, sorted(ignored)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the file system refuses (too long, unreadable): not a log we can read
        return False
