"""`promptloop app`: flags, the --host warning and login, checks at start, and the real server answering on the port
it was given."""

from __future__ import annotations

import http.cookiejar
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

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
    # a host other than loopback needs a login (issue 33): given in the environment, kept out of the process list
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PROMPTLOOP_APP_AUTH": "tester:s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "promptloop.cli", "app", "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, anonymous = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                anonymous = urllib.request.urlopen(f"{url}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert anonymous is not None and "PromptLoop" not in anonymous, proc.poll()  # the login page only
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"{url}/config", timeout=5)
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(f"{url}/login", data=b"username=tester&password=wrong", timeout=5)
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        browser.open(f"{url}/login", data=b"username=tester&password=s3cret", timeout=5)
        page = browser.open(f"{url}/", timeout=5).read().decode()
        assert "PromptLoop" in page, proc.poll()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "promptloop: warning: --host 0.0.0.0 serves the app" in err


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 serves the app to other machines: it then needs a login, give "
                                "PROMPTLOOP_APP_AUTH=USER:PASSWORD"),
    (["--host", "192.168.1.5", "--auth", "nocolon"], {}, "--auth: expected USER:PASSWORD with both parts non-empty"),
    (["--host", "example.org"], {"PROMPTLOOP_APP_AUTH": "user:"}, "PROMPTLOOP_APP_AUTH: expected USER:PASSWORD"),
    (["--device", "bogus"], {}, "--device: unknown device 'bogus'"),
    (["--device", "cuda:7" if not torch.cuda.is_available() else "mps"], {},
     "no CUDA GPU is available here" if not torch.cuda.is_available() else "MPS is not available here"),
])
def test_app_refuses_at_start(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str],
                              env: dict[str, str], message: str) -> None:
    """Issue 33: a bad --device or a non-loopback --host without a login ends before the server starts."""
    monkeypatch.delenv("PROMPTLOOP_APP_AUTH", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["app", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptloop: error: ") and message in err, err


def test_runs_root_that_is_a_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["app", "--runs-root", str(tmp_path / "f")]) == 2
    assert f"--runs-root {tmp_path / 'f'}: exists and is a file, not a folder" in capsys.readouterr().err
