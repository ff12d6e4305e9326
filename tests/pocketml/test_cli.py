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


def subcommand_options():
    """(command, option) for every option of every subcommand, as argparse holds them."""
    from pocketml.app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [(name, action) for name, command in sub.choices.items() for action in command._actions
            if action.option_strings and action.dest != "help"]


def test_every_flag_has_help_and_no_internal_name():
    options = subcommand_options()
    assert {name for name, _ in options} >= set(COMMANDS)
    no_help = [f"{name} {a.option_strings[0]}" for name, a in options if not (a.help or "").strip()]
    assert no_help == []
    # a metavar such as EPOCHS_FROZEN is a Python name leaking into --help
    internal = [f"{name} {a.option_strings[0]} {a.dest.upper()}" for name, a in options
                if a.nargs != 0 and a.metavar is None and a.choices is None and "_" in a.dest]
    assert internal == []


def test_train_flags_set_the_config_fields_their_help_names(tmp_path):
    from pocketml.training.cli import config_from_args

    from pocketml.app.cli import build_parser

    toml = tmp_path / "t.toml"
    toml.write_text("[train]\nepochs_frozen = 7\nbatch_size = 8\n")
    args = build_parser().parse_args(["train", "data", "--out", "m", "--config", str(toml), "--epochs", "3",
                                      "--dropout", "0.5", "--no-augment", "--backbone", "resnet50"])
    config = config_from_args(args)
    assert (config.epochs_frozen, config.batch_size, config.dropout, config.augment, config.backbone) == (
        3, 8, 0.5, False, "resnet50")
    assert build_parser().parse_args(["train", "d", "--out", "m"]).epochs_frozen is None  # the TOML's value stands
