"""Chat tab, "Is the tuned model better?": blind A/B votes with a running win rate, a vote loop over the run's
own rows, held-out loss/perplexity of both sides, and the tuned answer coloured by where the adapter changed it.
The other side of a blind pair ("against") is the base model, or another adapter of the Chat tab's list (a DPO run
against the SFT run it continued from); the win rate is then shown per pair.

Layout only: JudgeActions calls the LabEngine (blind_round, cast_vote, heldout, token_diff), which calls
lora_demo.judge; the token view is drawn by ui/views/judge.py. Which side is tuned never leaves the server before
the vote: the page gets A, B and an opaque id.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from lora_demo.engine import NO_VALIDATION_ROWS, LabEngine
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.ui.common import dynamic, friendly, gen_settings, lang, on_language, say, show, show_errors
from lora_demo.ui.views.judge import shade_colors, shaded_tokens

# The vote buttons' texts (captured and switched by ui/localize.py; the reveal quotes them, rendered by say()).
CHOICES = {"A": msg("A is better"), "B": msg("B is better"), "tie": msg("Tie"), "both_bad": msg("Both bad")}
VERDICT = {
    "tuned": msg("the tuned model wins"),
    "base": msg("the base model wins"),
    "tie": msg("a tie"),
    "both_bad": msg("both bad"),
}
MODEL_LOCK = dict(concurrency_limit=1, concurrency_id="model")  # generation is serialized per loaded model


def row_text(row: dict) -> str:
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")


def _split(values) -> tuple[list, str, str, str | None]:
    """A dealing handler's values: the 8 generation settings, the base model and adapter the page shows, then the
    opponent ("against": "" or None for the base model; API callers of before may leave it out)."""
    gen_values, (model, adapter, *rest) = list(values[:8]), values[8:]
    return gen_values, model, adapter, (rest[0] if rest else None)


class JudgeActions:
    """Handlers of the judging section, over one LabEngine."""

    def __init__(self, lab):
        self.lab = lab

    def _deal(self, prompt, queue, system, gen_values, model, adapter, opponent=None):
        trained_on = isinstance(prompt, dict) and prompt.get("split") == "train"  # a row the run trained on
        if isinstance(prompt, dict):
            prompt = {k: v for k, v in prompt.items() if k != "split"}
        ballot = self.lab.blind_round(prompt, gen_settings(*gen_values), system or "", model, adapter, opponent or None)
        status = (
            say("Which answer is better? Vote below. · {n} of the run's rows left", n=len(queue))
            if queue
            else say("Which answer is better? Vote below.")
        )
        if trained_on:
            status += "\n\n⚠️ " + say(
                "{why} These are its training rows instead, so this win rate measures how well "
                "it memorised them, not how it does on new prompts.",
                why=NO_VALIDATION_ROWS,
            )
        return ballot.a, ballot.b, ballot.id, status, queue

    @friendly
    def ask(self, prompt, system, *values):
        """A blind pair for a typed prompt (ends a running row loop); values: the generation settings, then the
        base model and adapter the page shows (the ballot records that adapter), then the opponent ("": base)."""
        gen_values, model, adapter, opponent = _split(values)
        return self._deal(str(prompt or ""), [], system, gen_values, model, adapter, opponent)

    @friendly
    def start_rows(self, system, *values):
        """Start the vote loop over the run's validation rows (training rows when it has none)."""
        gen_values, model, adapter, opponent = _split(values)
        rows, split = self.lab.vote_rows(adapter)
        rows = [{**r, "split": split} for r in rows]
        return (row_text(rows[0]), *self._deal(rows[0], rows[1:], system, gen_values, model, adapter, opponent))

    @friendly
    def vote(self, ballot_id, choice):
        vote, stats = self.lab.cast_vote(ballot_id, choice)
        base_side = "B" if vote.tuned_side == "A" else "A"
        if vote.opponent:  # adapter against adapter: both named
            names = {vote.tuned_side: self.lab.side_name(vote.adapter), base_side: self.lab.side_name(vote.opponent)}
            winner = {"tuned": names[vote.tuned_side], "base": names[base_side]}.get(vote.verdict)
            verdict = msg("`{name}` wins", name=winner) if winner else VERDICT[vote.verdict]
            reveal = say(
                "Last pair: **A** was `{a}`, **B** was `{b}`. Your vote ({choice}): {verdict}.",
                a=names["A"],
                b=names["B"],
                choice=CHOICES[vote.choice],
                verdict=verdict,
            )
        else:
            reveal = say(
                "Last pair: **{tuned}** was the tuned model, **{base}** the base. Your vote ({choice}): {verdict}.",
                tuned=vote.tuned_side,
                base=base_side,
                choice=CHOICES[vote.choice],
                verdict=VERDICT[vote.verdict],
            )
        return reveal, self.lab.win_rates_markdown(vote.adapter, lang(), stats), ""

    def vote_on_page(self, ballot_id, queue, choice):
        """A vote from the buttons: the answers are cleared at once, so nobody votes on a pair twice."""
        reveal, rate, cleared = self.vote(ballot_id, choice)
        nxt = (
            say("Dealing the next row's pair…")
            if queue
            else say("Voted. Ask another prompt, or vote on the run's rows.")
        )
        return reveal, rate, cleared, "", "", nxt

    @friendly
    def advance(self, queue, system, *values):
        """After a vote in the row loop, the next row's blind pair (nothing when the loop is over). The reveal stays,
        worded as the last pair's: a fast model deals the next pair before anyone could read a reveal cleared with
        it."""
        gen_values, model, adapter, opponent = _split(values)
        if not queue:
            return (gr.skip(),) * 7
        return (
            row_text(queue[0]),
            *self._deal(queue[0], queue[1:], system, gen_values, model, adapter, opponent),
            gr.skip(),
        )

    @friendly
    def rate(self, adapter):
        return self.lab.win_rates_markdown(adapter, lang())

    def rate_again(self, shown, adapter):
        """The win rate in the session's language after the switch (only where one is shown)."""
        if not shown or not adapter:
            return gr.skip()
        try:
            return self.lab.win_rates_markdown(adapter, lang())
        except Exception:  # noqa: BLE001 (the adapter's folder went away: the next vote says so)
            return gr.skip()

    def opponents(self, current, adapter):
        """The "against" list: the base model, then the adapters the Chat tab's adapter list offers (the runs folder,
        newest first, checkpoints included) but the one it shows; the pick stays (unless the tab now shows it)."""
        others = [(label, path) for label, path in self.lab.adapter_choices(lang()) if path != adapter]
        keep = current if current and current != adapter else ""
        return gr.Dropdown(choices=[(say("the base model"), ""), *others], value=keep)

    @friendly
    def export_pairs(self, adapter):
        path, pairs = self.lab.export_votes(adapter)
        return str(path), say(
            "{pairs} preference pairs (prompt, chosen, rejected) for TRL's DPOTrainer: `{path}`.",
            pairs=pairs,
            path=str(path),
        )

    @friendly
    def heldout(self, model, adapter):
        res = self.lab.heldout(model, adapter)
        if not res["rows"]:  # no validation rows: said in the table's place, not as a failure
            return pd.DataFrame([[say("no validation rows"), show(res["note"])]], columns=[say("model"), say("note")])
        names = {"base": say("base"), "tuned": say("tuned")}
        return pd.DataFrame(
            [[names[side], round(res[side]["loss"], 4), round(res[side]["ppl"], 2)] for side in ("base", "tuned")],
            columns=[
                say("model"),
                say("held-out loss ({rows} rows, {tokens} tokens)", rows=res["rows"], tokens=res["tokens"]),
                say("perplexity"),
            ],
        )

    @friendly
    def token_view(self, tuned_hist, model, adapter):
        turns = [m for m in tuned_hist or [] if not (m.get("metadata") or {}).get("title")]
        users = [LabEngine.flatten_content(m.get("content")) for m in turns if m.get("role") == "user"]
        answers = [LabEngine.flatten_content(m.get("content")) for m in turns if m.get("role") == "assistant"]
        if not users or not answers:
            raise InputError(
                msg("Chat first: the token view colours the tuned model's last answer to your last prompt.")
            )
        deltas = self.lab.token_diff(users[-1], answers[-1], model, adapter)
        # green: the tuned model likes the token more, red: less
        return gr.HighlightedText(value=shaded_tokens(deltas), color_map=shade_colors())


def create_judge_section(lab, gen_inputs: list, tuned_chat: gr.Chatbot, picked: list) -> tuple:
    """gen_inputs: the Chat tab's [system, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens,
    seed, scale, greedy]; picked: its [base model, adapter] lists, which every judging action uses (what the page
    shows). Returns the "Train DPO from these votes" button (ui.app wires it to the Train tab) and the status line."""
    act = JudgeActions(lab)
    with gr.Accordion("Is the tuned model better? Blind A/B votes", open=False):
        ui = _blind_layout()
        tools = _tools_layout()
    # What every dealing action takes: the 8 generation settings, the page's base and adapter, the opponent.
    gen = [gen_inputs[i] for i in (2, 3, 4, 5, 6, 7, 8, 9)] + picked + [ui.opponent]
    _wire_dealing(act, ui, gen_inputs[0], gen, picked[1])
    _wire_votes(act, ui, gen_inputs[0], gen)
    _wire_tools(act, ui, tools, tuned_chat, picked)
    return tools.dpo_btn, ui.status


def _blind_layout() -> SimpleNamespace:
    """The blind pair: who it is against, the prompt, answers A and B, the vote buttons, the reveal and win rate."""
    opponent = dynamic(
        gr.Dropdown(
            [(show(msg("the base model")), "")],
            value="",
            allow_custom_value=True,
            label="against (the other side of each blind pair)",
            elem_id="blind-opponent",
            info="the base model, or another adapter: e.g. a DPO run against the SFT run it continued from",
        )
    )
    with gr.Row():
        prompt = gr.Textbox(label="prompt for a blind pair", scale=4, elem_id="blind-prompt")
        ask_btn = gr.Button("Ask blind", scale=1, elem_id="blind-ask")
        rows_btn = gr.Button("Vote on the run's rows", scale=1, elem_id="blind-rows")
    status = gr.Markdown(elem_id="blind-status")
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Answer A**", elem_id="blind-a-title")
            a = gr.Markdown(label="A", elem_id="blind-a", container=True)
        with gr.Column():
            gr.Markdown("**Answer B**", elem_id="blind-b-title")
            b = gr.Markdown(label="B", elem_id="blind-b", container=True)
    with gr.Row():
        buttons = {c: gr.Button(label, elem_id=f"blind-vote-{c}") for c, label in CHOICES.items()}
    return SimpleNamespace(
        opponent=opponent,
        prompt=prompt,
        ask_btn=ask_btn,
        rows_btn=rows_btn,
        status=status,
        a=a,
        b=b,
        buttons=buttons,
        reveal=gr.Markdown(elem_id="blind-reveal"),
        rate=dynamic(gr.Markdown(elem_id="blind-rate")),
        ballot=gr.Textbox(visible=False),  # an opaque id; the side assignment stays on the server
        queue=gr.State([]),
    )


def _tools_layout() -> SimpleNamespace:
    """What to do with the votes (export, train DPO) and the measures: held-out loss, the token view."""
    with gr.Row():
        export_btn = gr.Button("Export the votes as DPO pairs", elem_id="blind-export")
        dpo_btn = gr.Button("Train DPO from these votes", elem_id="blind-train-dpo")
        export_file = gr.File(label="preference pairs (.jsonl)", interactive=False)
    with gr.Row():
        heldout_btn = gr.Button("Held-out loss and perplexity")
        tokens_btn = gr.Button("Colour the last tuned answer by what the adapter changed")
    heldout = gr.Dataframe(
        pd.DataFrame(columns=[say("model"), say("held-out loss"), say("perplexity")]),
        interactive=False,
        elem_id="blind-heldout",
    )
    tokens = gr.HighlightedText(
        label="tuned answer: green = the tuned model finds the token likelier than the "
        "base, red = less likely; the darker, the bigger the change (no colour: about "
        "the same)",
        color_map=shade_colors(),
        show_legend=True,
        elem_id="blind-tokens",
    )
    return SimpleNamespace(
        export_btn=export_btn,
        dpo_btn=dpo_btn,
        export_file=export_file,
        heldout_btn=heldout_btn,
        tokens_btn=tokens_btn,
        heldout=heldout,
        tokens=tokens,
    )


def _wire_dealing(act: JudgeActions, ui: SimpleNamespace, system, gen: list, adapter) -> None:
    """The "against" list kept up to date; Ask blind and "Vote on the run's rows" deal a new pair."""
    on_language(act.rate_again, [ui.rate, adapter], ui.rate)
    on_language(act.opponents, [ui.opponent, adapter], ui.opponent)
    for event in (ui.opponent.focus, adapter.change):  # the Chat tab's adapter list, less the adapter it shows
        event(act.opponents, [ui.opponent, adapter], ui.opponent, api_visibility="private", show_progress="hidden")
    # A new pair: the last pair's reveal, answers and ballot go at once (its win rate stays), so a vote pressed while
    # the new answers are generated can never land on the last pair.
    for button in (ui.ask_btn, ui.rows_btn):
        button.click(
            lambda: ("", "", "", "", say("Dealing a new blind pair…")),
            None,
            [ui.reveal, ui.a, ui.b, ui.ballot, ui.status],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
    dealt = [ui.a, ui.b, ui.ballot, ui.status, ui.queue]
    show_errors(
        ui.ask_btn.click(act.ask, [ui.prompt, system, *gen], dealt, api_name="chat_blind", **MODEL_LOCK), ui.status
    )
    show_errors(
        ui.rows_btn.click(
            act.start_rows, [system, *gen], [ui.prompt, *dealt], api_name="chat_blind_rows", **MODEL_LOCK
        ),
        ui.status,
    )


def _wire_votes(act: JudgeActions, ui: SimpleNamespace, system, gen: list) -> None:
    """Each vote button reveals the sides and updates the win rate; in the row loop the next pair is dealt. The
    API's chat_vote votes on a pair by its id."""
    dealt = [ui.a, ui.b, ui.ballot, ui.status, ui.queue]
    for choice, button in ui.buttons.items():
        event = button.click(
            lambda bid, q, c=choice: act.vote_on_page(bid, q, c),
            [ui.ballot, ui.queue],
            [ui.reveal, ui.rate, ui.ballot, ui.a, ui.b, ui.status],
            api_visibility="private",
        )
        show_errors(event, ui.status)
        show_errors(
            event.success(
                act.advance,
                [ui.queue, system, *gen],
                [ui.prompt, *dealt, ui.reveal],
                api_visibility="private",
                **MODEL_LOCK,
            ),
            ui.status,
        )

    def chat_vote(ballot_id: str, choice: str) -> tuple[str, str, str]:
        """Vote on a blind pair: choice is A, B, tie or both_bad; returns (the reveal, the win rate, '')."""
        return act.vote(ballot_id, choice)

    gr.api(chat_vote, api_name="chat_vote")


def _wire_tools(act: JudgeActions, ui: SimpleNamespace, tools: SimpleNamespace, tuned_chat, picked: list) -> None:
    """Export the votes, the held-out loss and the token view (their errors in the section's status line)."""
    status = ui.status
    show_errors(
        tools.export_btn.click(act.export_pairs, picked[1], [tools.export_file, status], api_name="chat_export_votes"),
        status,
    )
    show_errors(
        tools.heldout_btn.click(act.heldout, picked, tools.heldout, api_name="chat_heldout", **MODEL_LOCK), status
    )
    show_errors(
        tools.tokens_btn.click(
            act.token_view, [tuned_chat, *picked], tools.tokens, api_name="chat_token_diff", **MODEL_LOCK
        ),
        status,
    )
