"""The exception classes of the library's status codes (each also a matching built-in, the status on the
exception, picklable) and the library's log forwarded to Python's ``logging`` from its own threads.

Run: DIFFMINE_LIB=target/release/libdiffmine.so python -m unittest discover -s bindings/python/tests -v
"""

from __future__ import annotations

import logging
import pickle
import threading
import unittest

from test_model import FAMILIES, assert_family, fixtures

import diffmine
from diffmine import Status
from diffmine._errors import error_for


class ExceptionTest(unittest.TestCase):
    def test_every_status_has_its_class_and_builtin(self) -> None:
        self.assertEqual(set(FAMILIES), set(Status) - {Status.OK}, "a status without an expected class in this test")
        for status in FAMILIES:
            with self.subTest(status.name):
                err = error_for(status, "what went wrong")
                assert_family(self, err, status)
                self.assertIsInstance(err, diffmine.Error)
                self.assertEqual((err.status, err.message), (int(status), "what went wrong"))
                self.assertEqual(str(err), f"what went wrong [DM_{status.name}]")

    def test_a_status_this_binding_does_not_know_is_a_plain_error(self) -> None:
        err = error_for(99, "from a newer library")
        self.assertIs(type(err), diffmine.Error)
        self.assertEqual(str(err), "from a newer library [status 99]")

    def test_exceptions_pickle_with_their_status(self) -> None:
        for status in (Status.ERR_IO, Status.ERR_INVALID_ARGUMENT, Status.ERR_CANCELLED):
            err = pickle.loads(pickle.dumps(error_for(status, "m")))
            self.assertIs(type(err), type(error_for(status, "m")))
            self.assertEqual((err.status, err.message, str(err)), (int(status), "m", f"m [DM_{status.name}]"))

    def test_the_file_error_is_an_oserror_without_an_errno(self) -> None:
        with self.assertRaises(OSError) as caught:
            diffmine.Model("/nonexistent/diffmine-model")
        self.assertIsInstance(caught.exception, diffmine.FileError)
        self.assertIsNone(caught.exception.errno)
        self.assertIn("/nonexistent/diffmine-model", str(caught.exception))


class LoggingTest(unittest.TestCase):
    def test_the_library_log_reaches_logging_from_each_thread(self) -> None:
        folder = fixtures() / "sd15_tiny"

        def open_and_close() -> None:
            diffmine.Model(folder).close()

        workers = [threading.Thread(target=open_and_close, name=f"diffmine-test-loader-{i}") for i in range(4)]
        with self.assertLogs("diffmine", level=logging.INFO) as logs:
            for worker in workers:  # at once: the callback is entered from several threads together
                worker.start()
            for worker in workers:
                worker.join()
        loaded = [r for r in logs.records if r.getMessage().startswith("model loaded")]
        self.assertEqual(sorted(r.threadName for r in loaded), [w.name for w in workers], [r.getMessage() for r in logs.records])
        for record in loaded:
            self.assertEqual(record.levelno, logging.INFO)
            self.assertTrue(record.name.startswith("diffmine."), record.name)  # the Rust module, e.g. diffmine.model
            self.assertIn(str(folder), record.getMessage())

    def test_a_level_above_info_hides_the_event(self) -> None:
        logger = logging.getLogger("diffmine")
        seen = []
        handler = logging.Handler()
        handler.emit = seen.append  # type: ignore[method-assign]
        logger.addHandler(handler)
        saved = logger.level
        try:
            logger.setLevel(logging.WARNING)
            diffmine.Model(fixtures() / "sd15_tiny").close()
        finally:
            logger.setLevel(saved)
            logger.removeHandler(handler)
        self.assertEqual([r for r in seen if r.levelno < logging.WARNING], [])


if __name__ == "__main__":
    unittest.main()
