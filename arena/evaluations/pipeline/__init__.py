"""How a run works: a pipeline of steps, each moving the run's entries one stage on.

    plan      check each model, split the items into batches, queue one generate task per batch
    generate  each batch's answers through the generations cache (gpu queue); a model whose
              batches failed fails with the first reason
    score     each answer scored by the suite's metric as its batch is stored; a model is scored once
              all its batches are (a judge suite's answers wait for the judge comparing them)
    combine   a blend whose members are all done combines their stored answers (cpu queue, or the
              gpu queue of the model its strategy calls)
    analyse   a scored entry's mean with a bootstrap interval, cost and latency, a blend's lift over
              its best member; then the entry is done
    finish    every entry done or failed: the run closes (partial when some failed) and says so
              (run_finished)

An entry moves queued -> running -> scored -> done (or failed at any point). Each step is a function
of the run's state (``RunState``) that makes the moves it can and returns the state after them. The
dispatcher, ``advance``, is the only caller of the steps: it runs them in order until a whole pass
moves nothing, and the run then waits for work in flight (a batch, a combine, the judging). The
tasks (tasks.py) each do one piece of that work through the functions below, and then advance the
run. Every move is a conditional update, so a step run twice, or by two workers at once, moves once.
"""

from __future__ import annotations

from arena.evaluations.pipeline import analyse, combine, finish, generate, plan, score
from arena.evaluations.pipeline.state import RunState

STEPS = (plan.step, generate.step, score.step, combine.step, analyse.step, finish.step)


def advance(run_id: int) -> None:
    """Move the run as far as its stored state allows now."""
    state = RunState.read(run_id)
    while state is not None and not state.closed:
        before = state.signature
        for step in STEPS:
            state = step(state)
        if state.signature == before:
            return


def plan_run(run_id: int) -> None:
    advance(run_id)


def generate_batch(work_item_id: int) -> None:
    if (run_id := generate.batch(work_item_id)) is not None:
        advance(run_id)


def combine_blend(run_entry_id: int) -> None:
    if (run_id := combine.blend(run_entry_id)) is not None:
        advance(run_id)


def judge_run(run_id: int) -> None:
    if score.judge(run_id) is not None:
        advance(run_id)
