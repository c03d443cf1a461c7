"""LabEngine: the one object the UI acts on. It owns the app's folders and path policy, the saved datasets, the
training runner and the chat engine, and offers every action a tab needs as a plain method (no gradio here),
so the tests and the CLI can do what a tab does without launching the app.

    settings ──► LabEngine ──► policy    (which paths the browser/API may name)
                          ├──► datasets  (DatasetStore: saved rows, autosave, history)
                          ├──► dataset   (DatasetActions: the Dataset tab's work over those rows)
                          ├──► runner    (one training process at a time; frees the chat's GPU first)
                          ├──► chat      (ChatPool: each base loaded once, any number of adapters attached;
                          │               every request names its own base and adapter)
                          ├──► ballots   (blind A/B pairs awaiting a vote; votes go to <adapter>/votes.jsonl)
                          ├──► lowrank   (LowRankActions: the Low-rank lab's SVD, ΔW = B·A and adapter spectra)
                          └──► train     (TrainActions: the Train tab's lists, runs and live view of a run)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lora_demo import env
from lora_demo.adapters import adapter_choices, run_folder, votes_file
from lora_demo.chat.engine import compare_on_rows
from lora_demo.chat.pool import ChatPool
from lora_demo.chat.registry import adapter_key
from lora_demo.chat.request import GenSettings, flatten_content, split_thinking
from lora_demo.data import DatasetStore
from lora_demo.data.actions import DatasetActions
from lora_demo.data.preferences import (
    PAIRS,
    VOTES,
    clean_pairs,
    is_votes,
    pairs_from_votes,
    save_pairs,
    saved_pairs,
    vote_sources,
)
from lora_demo.errors import InputError
from lora_demo.export.hub import push
from lora_demo.export.layout import GGUF_TYPES
from lora_demo.export.parity import path_label
from lora_demo.export.run_exports import check_run, export_run
from lora_demo.i18n import joined, msg
from lora_demo.io import read_jsonl
from lora_demo.judge import (
    Ballots,
    VoteStore,
    export_dpo,
    heldout_loss,
    side_name,
    token_diff,
    vote_rows_split,
    vote_summary,
    win_rates_markdown,
)
from lora_demo.judge.ballots import same_sides
from lora_demo.lowrank.actions import LowRankActions
from lora_demo.models import REGISTRY, cached_tokenizer, resolve_model, thinking_switch
from lora_demo.models.registry import check_model
from lora_demo.paths import PathPolicy, inside
from lora_demo.rundir import RunDir
from lora_demo.train.actions import TrainActions, run_outcome, visible_gpus
from lora_demo.train.compare import MAX_RUNS, compare_runs
from lora_demo.train.lineage import continue_settings
from lora_demo.train.plan import plan_run
from lora_demo.train.runner import Runner, resolve_data
from lora_demo.train.runs import delete_run, read_status, stop_command
from lora_demo.train.settings import TrainSettings, form_fields, settings_from_form

if TYPE_CHECKING:
    from lora_demo.train.settings import TrainSettings

# What the evaluation tools say about a run trained without validation rows (held-out loss, the row votes).
NO_VALIDATION_ROWS = msg(
    "This run has no validation rows (its validation fraction was 0, or the dataset too small): "
    "train with a validation fraction above 0 (0.1 is usual) to measure held-out loss and to "
    "vote on rows the run never saw."
)


@dataclass
class AppSettings:
    """What app.py's flags decide."""

    model: str = "auto"  # "auto": the registry's default for this device
    runs_dir: Path = field(default_factory=lambda: Path("runs"))
    data_dir: Path = field(default_factory=lambda: Path("data"))
    allow_dirs: list[Path] = field(default_factory=list)  # extra folders the browser may name (--allow-dir)
    shared: bool = False  # reachable beyond this machine (--share, or a --host other than localhost)


class LabEngine:
    """Everything one running app holds; the tabs wire their events to its methods."""

    # The least seconds between two page updates of the Chat tab's answers (every update re-renders them in the
    # browser); read once, when the app is imported ($LORA_LAB_CHAT_UPDATE_S).
    chat_update_s = env.chat_update_s()

    def __init__(self, settings: AppSettings | None = None):

        self.settings = settings or AppSettings()
        self.runs_dir, self.data_dir = Path(self.settings.runs_dir), Path(self.settings.data_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.policy = PathPolicy([self.runs_dir, self.data_dir, *self.settings.allow_dirs])
        self.datasets = DatasetStore(self.data_dir)
        self.dataset = DatasetActions(self.datasets, self.policy, self.import_preferences)  # the Dataset tab's work
        self.chat = ChatPool()
        self.runner = Runner(self.runs_dir, self.data_dir, shared=self.settings.shared)  # (shared: no python rewards)
        self.runner.before_start.append(self.chat.release_for_training)  # a GPU holds one model at a time
        self.runner.reap()  # runs an earlier app left "active" are recorded as failed, with why
        self.ballots = Ballots()  # blind A/B pairs waiting for a vote (which side is tuned stays here)
        self.lowrank = LowRankActions(self)  # the Low-rank lab's work (SVD, ΔW = B·A, adapter spectra)
        self.train = TrainActions(self)  # the Train tab's work (its lists, the runs, watching a run)

    @property
    def default_model(self) -> str:

        return resolve_model(self.settings.model)

    # --- lists the tabs offer ---
    def model_choices(self) -> list[str]:
        """The registry's model ids, in its order (the base-model lists of the Train and Chat tabs)."""
        return list(REGISTRY)

    def adapter_choices(self, lang: str = "en") -> list[tuple[str, str]]:
        """(label, path) of the runs folder's adapters, newest first (checkpoints and rank-k copies included),
        labelled in `lang`: the adapter lists of the Train, Chat and Low-rank tabs."""
        return adapter_choices(self.runs_dir, lang)

    @staticmethod
    def adapters_in(runs_dir, lang: str = "en") -> list[tuple[str, str]]:
        """adapter_choices of any runs folder (ui.common.adapter_list refreshes a list from a folder it is given)."""
        return adapter_choices(runs_dir, lang)

    # --- the chat's request and message format (no model needed: the tabs build and read their histories) ---
    flatten_content = staticmethod(flatten_content)  # Gradio's content blocks → plain text
    split_thinking = staticmethod(split_thinking)  # a Qwen3 reply → (thinking, answer)

    @staticmethod
    def gen_settings(**settings) -> GenSettings:
        """A chat request's generation settings (GenSettings' fields; checked where a request uses them)."""
        return GenSettings(**settings)

    # --- this machine (the System tab; `python -m lora_demo info` prints the same report) ---
    @staticmethod
    def system_panels(lang: str = "en") -> tuple[str, str]:
        """The System panel (device, backend, precision, the models usable here now), freshly detected, and apart
        the hub models that need a download once, both as Markdown in `lang`."""
        from lora_demo.system import format_system_info, hub_models_markdown, system_info  # (imports torch)

        info = system_info()
        return format_system_info(info, lang, offline_only=True), hub_models_markdown(info, lang)

    # --- the Train form (TrainSettings' fields: train/settings.py says how each is shown) ---
    train_form = staticmethod(form_fields)  # the form's fields in its endpoints' order, each with how it is shown
    settings_from_form = staticmethod(settings_from_form)  # {setting: the form's value} → TrainSettings
    visible_gpus = staticmethod(visible_gpus)  # the CUDA GPUs this process sees (the form's GPUs field)
    run_outcome = staticmethod(run_outcome)  # what a run's progress box says under its bar (error, adapter, command)

    # --- runs ---
    def run_dir(self, name) -> Path:
        """The folder of a run named in a list, checked to lie inside the runs folder."""

        if not name:
            raise InputError(msg("Pick a run in 'show run' first."))
        run_dir = inside(self.runs_dir, name, msg("run name"))
        if not run_dir.is_dir():
            raise InputError(msg("No run named {name!r}.", name=name))
        return run_dir

    def adapter_for_chat(self, name) -> str:
        """A run's adapter path spelled as the Chat list spells it; a clear message when it has none yet."""

        run_dir = self.run_dir(name)
        if not RunDir(run_dir).has_adapter_config():
            status = read_status(run_dir).get("status", "unknown")
            raise InputError(
                msg(
                    "Run {name!r} has no adapter yet (status: {status}). Wait until it completes or is stopped.",
                    name=name,
                    status=status,
                )
            )
        return str(self.runs_dir / run_dir.name)

    def delete_run(self, name) -> Path:
        """Delete a run folder that is not training (runs.delete_run: inside the runs folder only, a symlink as a link
        only). Under the runner's lock, so a run being started or resumed now is never deleted half-made."""

        with self.runner.lock:
            active = self.runner.current()
            if active is not None and isinstance(name, str) and active.name == name.strip():
                raise InputError(
                    msg(
                        "{run} is training: stop it first (the Stop button, or {command}), then delete it.",
                        run=active.name,
                        command=stop_command(active),
                    )
                )
            return delete_run(self.runs_dir, name)

    def compare_runs(self, names) -> dict:
        """The loss curves and summary table of the runs named in the lists (train/compare.py), each name checked to
        be a run of the runs folder (nothing outside it is read)."""

        names = [names] if isinstance(names, str) else names
        if not isinstance(names, (list, tuple)) or any(not isinstance(n, str) for n in names):
            raise InputError(msg("Pick the runs to compare from the list."))
        names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        if len(names) > MAX_RUNS:
            raise InputError(msg("Compare at most {n} runs at once (got {count}).", n=MAX_RUNS, count=len(names)))
        return compare_runs([self.run_dir(n) for n in names])

    # --- training ---
    def checked_settings(self, settings):
        """TrainSettings whose model and dataset the browser may name (the policy applied to both)."""

        settings.model = check_model(self.policy, settings.model)
        if settings.init_adapter:  # stored relative to the app's folder when inside it (runs/<run>), as lists spell it
            parent = self.policy.check(settings.init_adapter, msg("adapter folder to continue from"))
            here = Path.cwd().resolve()
            settings.init_adapter = str(parent.relative_to(here) if parent.is_relative_to(here) else parent)
        ds = settings.dataset
        if (is_votes(ds) or ds.startswith(PAIRS)) and settings.method != "dpo":
            raise InputError(
                msg(
                    "{dataset} holds preference pairs, which only the DPO method trains on: pick DPO as "
                    "the training method, or an instruction dataset.",
                    dataset=ds,
                )
            )
        if is_votes(ds):  # votes:<run>: a run of the runs folder by its name, else a folder the policy allows
            name = ds[len(VOTES) :].strip()
            try:
                run = inside(self.runs_dir, name, msg("run name")) if name else None
            except InputError:  # not a plain name (a path): the policy decides
                run = None
            if name and not (run is not None and run.is_dir()):
                settings.dataset = VOTES + str(self.policy.check(name, msg("run folder whose votes to learn from")))
        elif ds.startswith(PAIRS):  # a preference set of the data folder (its name checked where it is read)
            pass
        elif not ds.startswith("example:") and ds not in self.datasets.names():
            settings.dataset = str(self.policy.check(ds, msg("dataset file")))
        return settings

    def plan(self, settings) -> dict:

        settings = self.checked_settings(settings)
        rows = resolve_data(settings, self.data_dir, self.runs_dir)  # (DPO: its preference pairs)
        try:
            tok = cached_tokenizer(settings.model)
        except Exception:  # noqa: BLE001 - token counting is optional (a hub model, offline)
            tok = None
        plan = plan_run(settings, rows, tok)
        self.runner.prewarm()  # the user is editing settings: have a worker import the libraries meanwhile
        return plan

    def start_training(self, settings) -> tuple[Path, dict]:
        """Check, plan and launch a run; (run folder, plan). Blocking errors stop it before anything loads."""

        settings = self.checked_settings(settings)
        rows = resolve_data(settings, self.data_dir, self.runs_dir)  # (DPO: its preference pairs)
        plan = plan_run(settings, rows, None)
        if plan["errors"]:
            raise InputError(msg("Fix these first: {problems}", problems=joined(plan["errors"][:5])))
        return self.runner.start(settings, rows), plan

    def resume(self, name) -> tuple[Path, list[str]]:
        """Resume a stopped or failed run from its newest whole checkpoint: (checkpoint, messages on skipped ones)."""
        return self.runner.resume(self.run_dir(name))

    def continue_settings(self, adapter):
        """Settings for 'Continue training' from an adapter (a run, or one of its checkpoints) the lists offer."""

        if not adapter:
            raise InputError(msg("Pick the run (or checkpoint) to continue from."))
        return continue_settings(self.policy.check(adapter, msg("adapter folder to continue from")), str(adapter))

    def dpo_from_votes(self, adapter) -> TrainSettings:
        """Settings for "Train DPO from these votes": a DPO round continuing from the adapter the votes were cast on
        (a run, or one of its checkpoints), on those votes (dataset `votes:`: the parent's), its other settings the
        parent's. Refused, saying what to do, while its votes give no preference pair."""

        adapter = self._adapter_of(adapter)
        pairs_from_votes(adapter)  # no votes yet, or only ties: the message says so now, not at Start
        data = self.continue_settings(adapter).to_dict()
        # One process on this machine: DPO trains in one (a parent trained over GPUs or machines keeps its config).
        data.update(method="dpo", dataset=VOTES, num_processes=1, num_nodes=1, node_rank=0, fsdp=False)
        return TrainSettings.from_dict(data)

    def preference_sources(self) -> list[tuple[str, str]]:
        """The datasets a DPO run can pick, as (label, value): the runs whose votes give pairs (votes:<run>), then
        the preference sets the Dataset tab saved (pairs:<name>); a label may be a Msg (shown in the page's
        language)."""

        return vote_sources(self.runs_dir) + [(value, value) for value in saved_pairs(self.data_dir)]

    def import_preferences(self, pairs: list, name: str) -> tuple[str, int]:
        """Save imported prompt/chosen/rejected records as a preference set of the data folder (`pairs:<name>`, for
        a DPO run's dataset), checked first: nothing is saved when an error would block training. (its value, how
        many pairs)."""

        saved = save_pairs(self.data_dir, name, pairs)
        return PAIRS + saved.stem, len(clean_pairs(pairs))

    # --- export ---
    def export(self, name, kind: str, outtype: str | None = None) -> Path:
        """Export a run where the Train tab puts exports (lora_demo/export/layout.py): kind zip, merged, gguf
        (outtype f16, bf16 or q8_0, with an Ollama Modelfile beside it) or lora-gguf."""

        return export_run(self.run_dir(name), kind, outtype)

    def export_check(self, name, gguf_types: tuple[str, ...] = ("f16", "q8_0")) -> dict:
        """The parity report of a run's exports (the app vs the merged model vs each GGUF), made where missing."""

        return check_run(self.run_dir(name), tuple(gguf_types))

    @staticmethod
    def gguf_types() -> tuple[str, ...]:
        """The merged-model GGUF types an export can write (what llama.cpp's converter writes unquantized)."""
        return GGUF_TYPES

    @staticmethod
    def parity_label(key: str) -> str:
        """How the parity report names one of its paths: 'merged' → 'merged', 'gguf_q8_0' → 'GGUF q8_0'."""
        return path_label(key)

    def export_push(
        self,
        name,
        repo_id,
        private: bool = False,
        include_gguf: bool = False,
        dry_run: bool = True,
        token: str | None = None,
    ) -> dict:
        """Upload a run to the Hugging Face Hub (dry_run: list the files only). token: the visitor's own; without it
        the machine's saved login is used, which a shared app never lends to its visitors."""

        if self.settings.shared and not token and not dry_run:
            raise InputError(
                msg(
                    "This app is shared: paste your own Hugging Face token (write access) to push; the "
                    "token of the machine it runs on is never lent to visitors."
                )
            )
        return push(self.run_dir(name), repo_id, bool(private), bool(include_gguf), bool(dry_run), token or None)

    # --- chat ---
    # Every chat action names the base and adapter its page shows (the Chat tab's lists): two visitors with two
    # adapters each get their own, and nothing one loads changes what another's requests use.
    def chat_target(self, model_id, adapter_dir) -> tuple[str, str | None]:
        """(the base id, the adapter folder or None) a request names, both checked by the policy; 'auto' or empty:
        the adapter's base, else this device's default."""

        if model_id is not None and not isinstance(model_id, str):
            raise InputError(msg("The base model must be text, not {kind}.", kind=type(model_id).__name__))
        if adapter_dir is not None and not isinstance(adapter_dir, str):
            raise InputError(msg("The adapter must be a folder path, not {kind}.", kind=type(adapter_dir).__name__))
        adapter_dir = adapter_key(self.policy.check(adapter_dir, msg("adapter folder"))) if adapter_dir else None
        if model_id and model_id.strip() != "auto":  # a model the user named: one this app may read
            model_id = check_model(self.policy, model_id)
        return resolve_model(model_id or "auto", adapter_dir), adapter_dir

    def load_chat(self, model_id, adapter_dir) -> Iterator[str]:
        """Have the base loaded and the adapter attached (the Load button; Send does it too), yielding the stages."""
        base, adapter = self.chat_target(model_id, adapter_dir)
        said = False
        for line in self.chat.ensure(base, adapter):
            said = True
            yield line
        if not said:  # loaded and attached already: say so
            yield self.chat.get(base).status(adapter)

    def chat_engine(self, model_id, adapter_dir, stages: list | None = None):
        """(the loaded engine, its adapter folder) for a request, loading and attaching as needed; the stage lines
        go to `stages` when given."""
        base, adapter = self.chat_target(model_id, adapter_dir)
        for line in self.chat.ensure(base, adapter):
            if stages is not None:
                stages.append(line)
        return self.chat.get(base), adapter

    def thinking_offered(self, model_id, adapter_dir=None) -> bool:
        """Whether the 'Qwen3 thinking' switch does anything for the model a page names (the Train tab's model; the
        Chat tab's base, 'auto': its adapter's): only when that model's chat template reads enable_thinking."""

        try:
            base, _ = self.chat_target(model_id, adapter_dir)
        except Exception:  # noqa: BLE001 - a name the policy refuses or that names no model: nothing to offer
            return False
        return thinking_switch(base)

    def chat_status(self, model_id, adapter_dir) -> str:
        """The status line of what a page shows selected: loaded or not, and what Send will do."""
        try:
            base, adapter = self.chat_target(model_id, adapter_dir)
        except InputError as e:
            return e.args[0]
        engine = self.chat.get(base)
        if engine is None and adapter is None and str(model_id or "auto").strip() == "auto":  # Send would refuse
            return msg(
                "Nothing picked yet: pick an adapter (then Load or Send), or press Load to chat with `{model}` alone.",
                model=base,
            )
        if engine is None:
            return msg(
                "Not loaded yet: Load (or Send) loads `{model}`{adapter}.",
                model=base,
                adapter=msg(" with adapter `{path}`", path=adapter) if adapter else "",
            )
        if adapter and adapter not in engine.adapters:
            return msg("`{model}` is loaded; Load (or Send) attaches adapter `{path}` to it.", model=base, path=adapter)
        return (
            engine.status(adapter)
            if adapter
            else engine.status(None)
            if engine.adapter_dir is None
            else msg("Loaded base `{model}` with no adapter: both sides are the base model.", model=base)
        )

    def chat_stream(
        self,
        model_id,
        adapter_dirs,
        histories: list,
        system: str,
        gen,
        enable_thinking=None,
        every_s: float = 0.0,
        stop=None,
        with_base: bool = True,
    ) -> Iterator[tuple[str, list]]:
        """Stream a request: ("stage", [Msg]) while its base loads or its adapters attach, then ("answers", [one
        SideResult per history]): history 0 is the base model's, history i the adapter adapter_dirs[i-1]'s, all in
        one batch. with_base=False (one adapter's answer only, the OpenAI endpoint): no base row, history i is
        adapter_dirs[i]'s. stop: an Event that stops this request only."""
        stages: list = []
        first = adapter_dirs[0] if adapter_dirs else None
        if first is None and str(model_id or "auto").strip() == "auto" and self.chat.get(self.default_model) is None:
            raise InputError(msg("Load a model first: pick an adapter (or a model) and press Load."))
        engine, first = self.chat_engine(model_id, first, stages)
        if stages:
            yield "stage", stages
        adapters = [first]
        for extra in adapter_dirs[1:]:
            more: list = []
            engine, path = self.chat_engine(engine.model_id, extra, more)
            if more:
                yield "stage", more
            adapters.append(path)
        rows = [None, *[a for a in adapters if a]] if first else [None]
        if not with_base and first:
            rows = rows[1:]
        for results in engine.generate(
            histories[: len(rows)], rows, system, gen, enable_thinking, every_s=every_s, prompt_adapter=first, stop=stop
        ):
            yield "answers", results

    # --- judging the tuned model (blind A/B, measures) ---
    def _judged(self, model_id, adapter_dir):
        """The loaded engine and the adapter of a judging action (an adapter is needed: it compares base and tuned)."""
        if not adapter_dir:
            raise InputError(
                msg("Load a run's adapter first (Chat tab: pick it and press Load): judging compares base and tuned.")
            )
        return self.chat_engine(model_id, adapter_dir)

    def blind_round(self, prompt: str | dict, gen, system: str = "", model_id="auto", adapter_dir=None, opponent=None):
        """Both answers to a prompt (text, or a dataset row prompted as trained), dealt as A/B in a secret order;
        the ballot records the adapter that answered, so the vote lands in that adapter's votes. opponent: the other
        side, None or "" for the base model, else another adapter folder (attached to the same base): both answers
        come from one batch, each adapter's row prompted in its own run's format."""
        from dataclasses import asdict

        if opponent is not None and not isinstance(opponent, str):
            raise InputError(msg("The adapter must be a folder path, not {kind}.", kind=type(opponent).__name__))
        engine, adapter = self._judged(model_id, adapter_dir)
        other = None
        if opponent and opponent.strip():
            engine, other = self.chat_engine(engine.model_id, opponent.strip())
            if other == adapter:
                raise InputError(same_sides(adapter))
        row = prompt if isinstance(prompt, dict) else {"instruction": str(prompt or ""), "input": ""}
        if not row.get("instruction", "").strip():
            raise InputError(msg("Type a prompt first, or press 'Vote on the run's rows'."))
        source = row if isinstance(prompt, dict) else [{"role": "user", "content": row["instruction"]}]
        results = None
        for results in engine.generate(  # noqa: B007 (the last yield is the answer)
            [source, source],
            [other, adapter],
            system,
            gen.check(),
            prompt_adapter=adapter,
        ):
            pass
        base, tuned = (split_thinking(r.text)[1] or r.text for r in results)
        return self.ballots.deal(
            adapter,
            engine.model_id or "",
            row["instruction"],
            base,
            tuned,
            settings=asdict(gen),
            seed=gen.seed,
            input=row.get("input", ""),
            system=system,
            opponent=other or "",
        )

    def cast_vote(self, ballot_id, choice):
        """Record a vote; returns (the vote, revealing the sides; the adapter's win-rate figures so far: win_rate's
        over all its votes, and by_opponent, the same per opponent: judge.vote_summary)."""

        if not isinstance(ballot_id, str) or not ballot_id.strip():
            raise InputError(msg("Ask for a blind pair first, then vote."))
        vote = self.ballots.cast(ballot_id.strip(), choice)
        return vote, vote_summary(VoteStore(vote.adapter).votes())

    def vote_stats(self, adapter_dir) -> dict:
        """An adapter's win-rate figures (judge.vote_summary: over all its votes, and by_opponent)."""

        return vote_summary(VoteStore(self._adapter_of(adapter_dir)).votes())

    @staticmethod
    def side_name(adapter_dir) -> str:
        """How the reveal and the win-rate lines name an adapter: its folder (a checkpoint: <run>/<checkpoint-N>)."""
        return side_name(adapter_dir)

    def win_rates_markdown(self, adapter_dir, lang: str = "en", stats: dict | None = None) -> str:
        """An adapter's win rates as the Chat tab shows them (judge.win_rates_markdown), in `lang`. stats: its
        figures when the caller has them (cast_vote's), else read from its votes (vote_stats)."""
        stats = self.vote_stats(adapter_dir) if stats is None else stats
        return win_rates_markdown(side_name(adapter_dir), stats, lang)

    def _adapter_of(self, adapter_dir) -> str:
        if not adapter_dir:
            raise InputError(
                msg("Load a run's adapter first (Chat tab: pick it and press Load): judging compares base and tuned.")
            )
        return self.chat_target("auto", adapter_dir)[1]

    def vote_rows(self, adapter_dir, limit: int = 20) -> tuple[list[dict], str]:
        """The rows for "Vote on the run's rows" and where they come from: "val" (rows the run never trained on) or
        "train" (the run has no validation rows: the votes then measure memorisation)."""

        return vote_rows_split(self._adapter_of(adapter_dir), limit)

    def heldout(self, model_id="auto", adapter_dir=None) -> dict:
        """Held-out loss and perplexity of base and tuned on the run's validation rows, masked as in training; a run
        with no validation rows: {"rows": 0, "tokens": 0, "note": why and what to do}."""

        adapter = self._adapter_of(adapter_dir)
        rows = read_jsonl(RunDir(run_folder(adapter)).val_rows_path)[:32]  # a checkpoint: its run's
        if not rows:  # said plainly, not as a failure: nothing loads
            return {"rows": 0, "tokens": 0, "note": NO_VALIDATION_ROWS}
        engine, adapter = self._judged(model_id, adapter)
        return heldout_loss(engine, rows, adapter_dir=adapter)

    def token_diff(self, prompt: str, answer: str, model_id="auto", adapter_dir=None) -> list[tuple[str, float]]:

        engine, adapter = self._judged(model_id, adapter_dir)
        if not str(prompt or "").strip() or not str(answer or "").strip():
            raise InputError(
                msg("Chat first: the token view colours the tuned model's last answer to your last prompt.")
            )
        return token_diff(engine, prompt, answer, adapter_dir=adapter)

    def compare_rows(self, model_id="auto", adapter_dir=None) -> list:
        """Greedy base and tuned answers on the adapter's run's own training and validation rows."""

        engine, adapter = self._judged(model_id, adapter_dir)
        return compare_on_rows(engine, adapter)

    def export_votes(self, adapter_dir) -> tuple[Path, int]:
        """An adapter's decided votes as DPO pairs (prompt, chosen, rejected) in <adapter>/exports/."""

        adapter = Path(self._adapter_of(adapter_dir))
        out = RunDir(run_folder(adapter)).exports_dir / votes_file(adapter).name.replace("votes", "dpo-pairs")
        pairs = export_dpo(VoteStore(adapter).votes(), out)
        if pairs == 0:
            raise InputError(msg("No decided votes yet (ties and 'both bad' make no pair): vote A or B first."))
        return out, pairs
