"""The walkthrough in a real browser: JupyterLab + headless Chromium, run all cells, the viewer renders.

JupyterLab listens on 127.0.0.1 (random free port, token auth, no browser); Chromium (Debian package
``chromium``) is driven through the DevTools protocol over a websocket (``websocket-client``, already a
dependency of jupyter_server). Chromium may resolve no host but 127.0.0.1. Both processes are stopped in
``finally``. The screenshot goes to ``<study>/reports/browser/walkthrough.png`` and, when the tests run
from a git checkout, to ``reports/browser/`` of the checkout (gitignored).
"""
import base64
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from test_walkthrough import NOTEBOOK, ROOT, write_fake_predictions

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH")]

# No proxy, whatever the environment says: every request goes to 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# JupyterLab user settings: no news or update checks (no network), and every cell kept in the DOM
# (the default windowing skips rendering cells outside the viewport).
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
# One JSON snapshot of the notebook in the page: kernel state, execution counts, the viewer.
_STATUS_JS = """(() => {
  const app = window.jupyterapp, nb = app && app.shell.currentWidget;
  if (!nb || !nb.content || !nb.sessionContext) return JSON.stringify({ready: false});
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  const img = document.querySelector('.jp-OutputArea img.widget-image');
  const html = [...document.querySelectorAll('.jp-OutputArea .widget-html-content')].map(e => e.innerText);
  const toggles = [...document.querySelectorAll('.jp-OutputArea .widget-toggle-button')].map(e => e.innerText.trim());
  const dropdown = document.querySelector('.jp-OutputArea .widget-dropdown select');
  const text = document.querySelector('.jp-Notebook').innerText;
  return JSON.stringify({ready: true, kernel: kernel ? kernel.status : null,
    counts: cells.map(c => c.model.executionCount), toggles, html,
    dropdown: dropdown ? dropdown.options[dropdown.selectedIndex].text.replace(/\u00a0/g, ' ') : null,
    img: img ? {src: img.src.slice(0, 5), w: img.naturalWidth, h: img.naturalHeight, complete: img.complete} : null,
    error: text.includes('Traceback (most recent call last)'),
    tail: text.slice(-1500)});
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, interval: float = 0.5, state=None):
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds, quoting
    ``state`` (e.g. the last page status) or the last return value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last state: {state if state else last}")


def _get(url: str, token: str | None = None, timeout: float = 5.0):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with _HTTP.open(req, timeout=timeout) as res:
            return json.loads(res.read())
    except (OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _DevTools:
    """Minimal Chrome DevTools Protocol client: one page target, synchronous calls."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:                                   # skip events until our answer arrives
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self):
        self.ws.close()


@pytest.fixture
def lab_study(smoke_study, tmp_path):
    """A study folder as a student has it after `dvc repro`: notebooks/, work/preprocessed, work/predictions."""
    study = tmp_path / "study"
    (study / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, study / "notebooks" / NOTEBOOK.name)
    shutil.copytree(smoke_study / "work" / "preprocessed", study / "work" / "preprocessed")
    write_fake_predictions(study, study / "work" / "predictions")
    return study


def test_walkthrough_renders_the_viewer_in_jupyterlab(lab_study, tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path / "home"
    for rel, value in _SETTINGS.items():
        (home / "settings" / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / rel).write_text(json.dumps(value))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "TF_ENABLE_ONEDNN_OPTS": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    lab_cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={lab_study}", "--LabApp.expose_app_in_browser=True",
               "--ServerApp.allow_root=True", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    profile = tmp_path / "chromium"
    chrome_cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                  "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                  "--disable-extensions", "--mute-audio", "--window-size=1200,1300", "about:blank"]
    shot = lab_study / "reports" / "browser" / "walkthrough.png"
    lab = chrome = devtools = None
    lab_log, chrome_log = open(tmp_path / "jupyterlab.log", "w"), open(tmp_path / "chromium.log", "w")
    try:
        lab = subprocess.Popen(lab_cmd, cwd=lab_study, env=env, stdout=lab_log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        _wait("JupyterLab", lambda: lab.poll() is None and _get(f"{base}/api/status", token), 90)
        chrome = subprocess.Popen(chrome_cmd, stdout=chrome_log, stderr=subprocess.STDOUT, start_new_session=True)
        active = profile / "DevToolsActivePort"
        _wait("Chromium's DevTools port", lambda: chrome.poll() is None and active.exists()
              and active.read_text().split("\n")[0].strip().isdigit(), 60)
        dev_port = int(active.read_text().split("\n")[0])
        pages = _wait("a Chromium page", lambda: [t for t in _get(f"http://127.0.0.1:{dev_port}/json/list") or []
                                                  if t.get("type") == "page"], 30)
        devtools = _DevTools(pages[0]["webSocketDebuggerUrl"])
        devtools.call("Page.enable")
        # A headless window never has focus, and JupyterLab's "current notebook" follows focus.
        devtools.call("Emulation.setFocusEmulationEnabled", enabled=True)
        devtools.call("Page.navigate", url=f"{base}/lab/tree/notebooks/{NOTEBOOK.name}?token={token}")

        seen = {}

        def status() -> dict:
            seen.update(json.loads(devtools.evaluate(_STATUS_JS) or "{}"))
            return seen

        _wait("the notebook and an idle kernel", lambda: status().get("kernel") == "idle", 120, state=seen)
        devtools.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells'); true")

        def finished():
            s = status()
            if s.get("error"):
                pytest.fail(f"a cell failed in JupyterLab:\n{s.get('tail')}")
            done = s.get("counts") and all(c is not None for c in s["counts"]) and s.get("kernel") == "idle"
            return s if done and s.get("img") and s["img"]["w"] > 0 and s["img"]["complete"] else None

        s = _wait("all cells to run and the viewer to render", finished, 240, interval=1.0, state=seen)
        assert s["img"]["src"] in ("blob:", "data:") and s["img"]["w"] >= 300 and s["img"]["h"] >= 200
        assert {"axial", "coronal", "sagittal", "ground truth", "stage 1", "stage 2"} <= set(s["toggles"])
        assert s["dropdown"] == "Adductor longus (right)"
        info = " ".join(s["html"])
        assert "stage-1 box" in info and "6 TTA boxes" in info, info

        devtools.evaluate("window.jupyterapp.shell.collapseLeft(); true")        # more room for the viewer
        time.sleep(1.0)
        devtools.evaluate("document.querySelector('.jp-OutputArea img.widget-image')"
                          ".closest('.widget-vbox').scrollIntoView({block: 'start'}); true")
        time.sleep(1.0)
        png = base64.b64decode(devtools.call("Page.captureScreenshot", format="png")["data"])
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(png)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
        if (ROOT / ".git").exists():
            (ROOT / "reports" / "browser").mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, ROOT / "reports" / "browser" / shot.name)
    finally:
        if devtools is not None:
            devtools.close()
        _stop(chrome)
        if lab is not None and lab.poll() is None:   # shuts its kernels down too (they run in their own sessions)
            try:
                _HTTP.open(urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown", method="POST", data=b"",
                                                  headers={"Authorization": f"token {token}"}), timeout=10)
            except OSError:
                pass
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        _stop(lab)
        lab_log.close()
        chrome_log.close()
