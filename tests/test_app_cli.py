"""`promptloop app`: flags, the --host warning, and the real server answering on the port it was given."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from promptloop.cli import main


def test_bad_port_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["app", "--port", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("promptloop: error: app: argument --port")


def test_app_serves_on_the_port_and_warns_for_another_host() -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install 'promptloop[app]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "promptloop.cli", "app", "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline, page = time.monotonic() + 60, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "PromptLoop" in page, proc.poll()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "promptloop: warning: --host 0.0.0.0 serves the app" in err
