"""Shared pytest setup.

Tests run single-threaded (also in the subprocesses they start, through ``OMP_NUM_THREADS``): the
networks in tests are tiny, and one thread per process avoids oversubscribing small CI machines.
Set ``MEDGEN_TEST_THREADS`` to use more.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("MEDGEN_TEST_THREADS", "1"))
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
os.environ.setdefault("MPLBACKEND", "Agg")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# Provenance signing keys and trust list of this test session (also for the CLI subprocesses tests start):
# a throwaway folder, never the user's ~/.medgen/keys.
os.environ["MEDGEN_KEY_DIR"] = tempfile.mkdtemp(prefix="medgen-test-keys-")
atexit.register(shutil.rmtree, os.environ["MEDGEN_KEY_DIR"], True)

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import locale  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_process_locale():
    """Restore the locale after each test: SimpleITK's GDCM writer, which test helpers use to build DICOM
    series, sets the C locale and leaves it so, which turns Python's default text encoding into ASCII for
    every later test in the process."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)
