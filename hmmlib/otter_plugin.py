"""The otter-grader plugin of the course assignments: grades computed outside the student's kernel.

Listed in each assignment's ``generate: plugins:`` (``tools/make_assignments.py`` does it) as
``hmmlib.otter_plugin.HmmbookGrader``, optionally with ``{"preset": "ci"}`` (the ``HMMBOOK_PRESET`` the
submission runs at; the exercises' answers do not depend on it). During grading it

- refuses the results file that otter's own last cell writes from inside the kernel (a submission can
  replace anything in its kernel, including otter's classes and :mod:`hmmlib.checks`, and could even make
  the grading process run code while unpickling that file): nothing the kernel reports is read;
- appends one cell after the submission that writes the answers the tests read as plain data
  (:func:`hmmlib.grading.write_answers`);
- reruns every test case of the assignment, as read from disk before the submission ran (its kernel could
  rewrite the files), in the grading process on those answers (:func:`hmmlib.grading.run_tests`); these
  results are the grade otter reports (Gradescope's
  ``results.json``, ``otter run``, ``otter grade``).

Needs otter-grader (``pip install otter-grader==7.0.0``); the rest of hmmlib does not.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile

import nbformat
from otter.plugins import AbstractOtterPlugin

from . import grading

__all__ = ["HmmbookGrader"]


class _KernelResultsRefused:
    """Stands in for the ``pickle`` module of ``otter.execute`` while a submission is graded."""

    @staticmethod
    def load(f):
        raise RuntimeError("hmmbook grades outside the student's kernel; the kernel's results file is not read")


class HmmbookGrader(AbstractOtterPlugin):
    """See the module docstring."""

    def _answers_path(self) -> str:
        if not getattr(self, "_path", None):
            fd, self._path = tempfile.mkstemp(prefix="hmmbook-answers-", suffix=".json")
            os.close(fd)
        return self._path

    def before_grading(self, config):
        preset = (self.plugin_config or {}).get("preset")
        if preset:
            os.environ["HMMBOOK_PRESET"] = str(preset)
        os.environ.setdefault("TQDM_DISABLE", "1")

    def before_execution(self, submission):
        import otter.execute

        otter.execute.pickle = _KernelResultsRefused            # restored in after_grading
        if not isinstance(submission, nbformat.NotebookNode):
            return submission
        self._tests = grading.read_tests(glob.glob("tests/*.py"))   # before the kernel can touch the files
        names, probe_exprs = grading.answer_names(self._tests)
        path = self._answers_path()
        source = (f"import hmmlib.grading as _hmmbook_grading\n"
                  f"_hmmbook_grading.write_answers(globals(), {json.dumps(names)}, "
                  f"{json.dumps(probe_exprs)}, {json.dumps(path)})")
        submission.cells.append(nbformat.v4.new_code_cell(source))
        return submission

    def after_grading(self, results):
        import pickle

        import otter.execute

        otter.execute.pickle = pickle
        answers = grading.read_answers(self._answers_path())
        files = grading.run_tests(getattr(self, "_tests", {}), answers)
        results.results = {tf.name: tf for tf in files}
        results._catastrophic_error = None
        try:
            os.remove(self._answers_path())
        except OSError:
            pass
