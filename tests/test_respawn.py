"""The dev stack (scripts/run.sh: honcho over the Procfile) keeps going when one process dies."""

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HONCHO = Path(sys.executable).parent / "honcho"


def test_a_process_that_dies_is_started_again_and_the_others_keep_running(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "dies: scripts/respawn sh -c 'echo started; sleep 0.3; kill -9 $$'\n"
        "steady: scripts/respawn sh -c 'echo steady; exec sleep 60'\n"
    )
    stack = subprocess.Popen(
        [str(HONCHO), "start", "-f", str(procfile), "-d", str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    time.sleep(5)
    assert stack.poll() is None, "honcho stopped everything when one process died"
    stack.send_signal(signal.SIGINT)  # Ctrl+C
    output, _ = stack.communicate(timeout=30)
    starts = [line for line in output.splitlines() if line.endswith("started")]
    assert len(starts) >= 3, output  # killed, started again (1 s, 2 s later), killed...
    assert [line for line in output.splitlines() if line.endswith("| steady")] != []
    assert len([line for line in output.splitlines() if line.endswith("| steady")]) == 1  # never restarted
    assert "exited with status 137; starting it again" in output


def test_the_procfile_runs_every_process_through_respawn():
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, command = line.split(":", 1)
        assert command.strip().startswith("scripts/respawn "), name
