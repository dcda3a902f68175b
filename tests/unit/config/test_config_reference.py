"""docs/config.md is generated from the config schema and must match it."""
from __future__ import annotations

from typing import Literal, Optional

from paths import REPO

from fairtune_ray.config import ExperimentConfig
from fairtune_ray.config.reference import (
    COMMAND,
    main,
    render_reference,
    sections,
    type_text,
)

DOC = REPO / "docs" / "config.md"


def test_docs_config_md_is_up_to_date():
    assert DOC.is_file(), f"docs/config.md is missing: run `{COMMAND}` from the repository root"
    assert DOC.read_text() == render_reference(), (
        f"docs/config.md is stale (a config field, default or description changed): run `{COMMAND}` "
        "from the repository root and commit the result")


def test_every_section_and_key_is_in_the_reference():
    text = render_reference()
    for section in sections():
        assert f"## {section.title}\n" in text
        for name in section.model.model_fields:
            key = f"{section.path}.{name}" if section.path else name
            assert f"| `{key}` " in text, key
    assert [s.path for s in sections()][:3] == ["", "data", "data.synthetic"]


def test_rows_show_type_bounds_and_default():
    rows = {line.split("|")[1].strip(): line for line in render_reference().splitlines() if line.startswith("| `")}
    assert "int \\| null, >= 1" in rows["`search.asha.grace_period`"] and "`null`" in rows["`search.asha.grace_period`"]
    assert "int, >= 0" in rows["`search.confirm.top_k`"] and "`3`" in rows["`search.confirm.top_k`"]
    assert "float, > 0.0, < 0.5" in rows["`data.synthetic.minority_fraction`"]
    assert '"adamw" \\| "sgd"' in rows["`train.optimizer`"]  # a pipe inside a table cell is escaped
    assert "`null`" in rows["`backbone.checkpoint`"] and "str \\| null" in rows["`backbone.checkpoint`"]
    assert '`["full", "linear"]`' in rows["`search.baselines`"]
    assert "[search.asha](#searchasha)" in rows["`search.asha`"]


def test_type_text_reads_like_yaml():
    assert type_text(Optional[float]) == "float | null"
    assert type_text(Literal["avg", "token"]) == '"avg" | "token"'
    assert type_text(list[int]) == "list[int]"
    assert type_text(ExperimentConfig) == "ExperimentConfig"


def test_check_flag_reports_a_stale_file_and_write_fixes_it(tmp_path, capsys):
    out = tmp_path / "config.md"
    out.write_text("# old\n")
    assert main(["--check", "--output", str(out)]) == 1
    assert COMMAND in capsys.readouterr().err
    assert main(["--output", str(out)]) == 0
    assert out.read_text() == render_reference()
    assert main(["--check", "--output", str(out)]) == 0
