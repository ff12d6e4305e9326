import subprocess
import sys

from pocketml.app.cli import main

COMMANDS = ("acquire", "curate", "audit", "train", "export", "validate", "package", "bench", "run")


def test_help_lists_every_stage_command_without_importing_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "from pocketml.app.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: build_parser().parse_args(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(out.getvalue()); print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for command in COMMANDS:
        assert command in result.stdout
    assert "TF_NOT_LOADED" in result.stdout


def test_user_error_prints_one_line_and_exits_2(tmp_path, capsys):
    code = main(["export", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("pocketml export: error:") and "missing.keras" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
