"""One thread owns the loaded model and runs the requests one at a time, in the order they came.

The HTTP side never runs the model while it samples: it submits a task, awaits the task's future,
and reads progress (a few numbers and the sampler's latest x0) under a lock. So `/progress` and
`/interrupt` answer at once however long the queue is. A task is stopped between two denoising
steps: `/interrupt` stops the running one, and a client that hangs up has its task dropped from the
queue, or stopped if it already runs.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..model import StableDiffusion
from ..pipeline import Step
from .catalogue import ModelEntry
from .codec import encode_png
from .preview import Keep, preview_image


class Interrupted(Exception):
    """The task was stopped by /interrupt or because its client went away."""


@dataclass(frozen=True)
class LoadedModel:
    entry: ModelEntry
    model: StableDiffusion


OnStep = Callable[[int, Step], None]
Work = Callable[[LoadedModel, OnStep], Any]


@dataclass
class Task:
    id: str
    label: str  # what /progress calls it: "txt2img", "img2img", "inpaint", "load model"
    work: Work
    iterations: int  # pipeline runs in the task (A1111's n_iter), for the progress fraction
    model: ModelEntry | None  # switch to this model first
    keep: Keep | None = None  # inpainting: what previews show where the mask keeps the image
    future: Future = field(default_factory=Future)
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Running:
    task: Task
    started: float
    timestamp: str
    loaded: LoadedModel | None = None  # set once the task's model is loaded
    iteration: int = 0
    step: Step | None = None


class Worker:
    def __init__(self, entry: ModelEntry, previews: bool = True):
        self.previews = previews
        self.loaded = self._load(entry)  # here, on the caller's thread: bad weights stop the server from starting
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: _Running | None = None
        self._waiting = 0
        self._preview: tuple[tuple, str] | None = None  # ((task id, iteration, step), base64 PNG)
        self._thread = threading.Thread(target=self._serve_tasks, name="latentdiff-worker", daemon=True)
        self._thread.start()

    def _load(self, entry: ModelEntry) -> LoadedModel:
        from ..weights import load

        return LoadedModel(entry, load(entry.path))

    def submit(self, label: str, work: Work, task_id: str | None = None, iterations: int = 1,
               model: ModelEntry | None = None, keep: Keep | None = None) -> Task:  # fmt: skip
        task = Task(task_id or uuid.uuid4().hex, label, work, iterations, model, keep)
        with self._lock:
            self._waiting += 1
        self._tasks.put(task)
        return task

    def switch_model(self, entry: ModelEntry) -> Task:
        """Queued like a request, so it never swaps the model under a running one."""
        return self.submit("load model", lambda loaded, on_step: loaded.entry.title, model=entry)

    def _serve_tasks(self) -> None:
        while (task := self._tasks.get()) is not None:
            if not task.future.set_running_or_notify_cancel():
                continue  # cancelled while it waited (and no longer counted)
            with self._lock:
                self._waiting -= 1
                self._running = _Running(task, time.time(), time.strftime("%Y%m%d%H%M%S"))
            result, error = self._run(task)
            with self._lock:  # idle before the answer goes out, so a client never sees its own task running
                self._running = None
            if error is None:
                task.future.set_result(result)
            else:
                task.future.set_exception(error)

    def _run(self, task: Task) -> tuple[Any, Exception | None]:
        try:
            if task.model is not None and task.model != self.loaded.entry:
                self.loaded = self._load(task.model)  # the old model stays loaded if this fails
            with self._lock:
                self._running.loaded = self.loaded
            return task.work(self.loaded, lambda iteration, step: self._on_step(task, iteration, step)), None
        except Exception as e:  # the task's error is its client's answer; the worker goes on
            return None, e

    def _on_step(self, task: Task, iteration: int, step: Step) -> None:
        with self._lock:
            self._running.iteration, self._running.step = iteration, step
        if task.stop.is_set():
            raise Interrupted(f"interrupted at step {step.index + 1} of {step.total}")

    def interrupt(self) -> bool:
        """Stop the running task after its current step; True if one was running."""
        with self._lock:
            if self._running is not None:
                self._running.task.stop.set()
            return self._running is not None

    def cancel(self, task: Task) -> None:
        """Drop a waiting task, or stop it if it already runs."""
        if task.future.cancel():  # exactly one of this and the worker's set_running_or_notify_cancel wins
            with self._lock:
                self._waiting -= 1
        else:
            task.stop.set()

    def progress(self, with_image: bool) -> dict:
        """A1111's /progress fields for the running task (zeros when idle)."""
        with self._lock:  # one consistent snapshot; the worker moves on meanwhile
            running, waiting = self._running, self._waiting
            if running is not None:
                task, loaded, iteration, step = running.task, running.loaded, running.iteration, running.step
        if running is None:
            return {"progress": 0.0, "eta_relative": 0.0, "state": {"job_count": waiting}, "textinfo": "idle"}
        done = 0.0 if step is None else (iteration + (step.index + 1) / step.total) / task.iterations
        elapsed = time.time() - running.started
        state = {
            "interrupted": task.stop.is_set(),
            "job": task.label,
            "job_count": waiting + 1,
            "job_timestamp": running.timestamp,
            "job_no": iteration,
            "sampling_step": 0 if step is None else step.index + 1,
            "sampling_steps": 0 if step is None else step.total,
            "task_id": task.id,
        }
        text = f"{task.label}: step {state['sampling_step']} of {state['sampling_steps']}"
        if task.iterations > 1:
            text += f", run {iteration + 1} of {task.iterations}"
        preview = None
        if with_image and self.previews and step is not None:
            preview = self._preview_png((task.id, iteration, step.index), loaded, step, task.keep)
        return {
            "progress": done,
            "eta_relative": elapsed * (1 - done) / done if done > 0 else 0.0,
            "state": state,
            "current_image": preview,
            "textinfo": text,
        }

    def _preview_png(self, key: tuple, loaded: LoadedModel, step: Step, keep: Keep | None) -> str:
        # Made on the asking thread, once per step however many clients poll.
        cached = self._preview
        if cached is None or cached[0] != key:
            cached = self._preview = (key, encode_png(preview_image(loaded.model, step.x0, keep)))
        return cached[1]

    def close(self) -> None:
        """Stop the running task after its step, cancel the waiting ones, end the thread."""
        self.interrupt()
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                self.cancel(task)
        self._tasks.put(None)
        self._thread.join()
