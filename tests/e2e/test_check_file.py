"""``numgate check FILE`` as a list cleaner runs it: bad rows reported and skipped, never a crash
nor a partial output file; national formats, 00 prefixes and punctuation read; spreadsheet
damage refused with its reason; every input column kept."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from clitools import clean_env, numgate, one_line_error

ENV = clean_env()


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_and_jsonl_keep_every_column(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text(
        "name,msisdn,city\nA,2348031234567,Lagos\nB,+14155550100,SF\nC,12,x\nD,2348031230003,Abuja\n"
    )
    p = numgate(ENV, "check", str(src), "--level", "5")
    rows = rows_of(p.stdout)
    assert list(rows[0])[:3] == ["name", "msisdn", "city"]
    assert [r["name"] for r in rows] == ["A", "B", "C", "D"] and rows[0]["city"] == "Lagos"
    assert [r["outcome"] for r in rows] == ["ok", "ok", "invalid_format", "ok"]
    assert rows[0]["carrier"] == "MTN" and rows[0]["region"] == "NG" and rows[3]["roaming"] == "YES"
    out = tmp_path / "out.jsonl"
    p = numgate(ENV, "check", str(src), "-o", str(out))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and lines[1]["e164"] == "+14155550100" and lines[1]["name"] == "B"
    assert "checked 4 row(s)" in p.stderr
    narrow = rows_of(numgate(ENV, "check", str(src), "--no-keep-columns").stdout)
    assert list(narrow[0])[:2] == ["input", "outcome"] and narrow[0]["input"] == "2348031234567"
    plain = tmp_path / "plain.txt"
    plain.write_text("2348031234567\n\n+447700900123\n")
    assert len(rows_of(numgate(ENV, "check", str(plain)).stdout)) == 2
    bad = numgate(ENV, "check", str(plain), "--level", "3", ok=False)
    assert bad.returncode == 2 and "'3' is not one of" in bad.stderr


def test_formats_list_cleaners_meet(tmp_path: Path) -> None:
    src = tmp_path / "crm.csv"
    src.write_text(
        "phone,note\n"
        "(415) 555-0123,national US with --region\n"
        "0044 20 7946 0000,00 prefix\n"
        "+234 803-123-4567,punctuation\n"
        "2.34803E+12,a spreadsheet ate it\n"
        ",empty cell\n"
        "2348031234567,plain\n"
    )
    rows = rows_of(numgate(ENV, "check", str(src), "--region", "US").stdout)
    assert [r["note"] for r in rows][-1] == "plain"  # the empty cell is a row too, in order
    by_note = {r["note"]: r for r in rows}
    assert by_note["national US with --region"]["e164"] == "+14155550123"
    assert by_note["00 prefix"]["e164"] == "+442079460000"
    assert by_note["punctuation"]["e164"] == "+2348031234567"
    sci = by_note["a spreadsheet ate it"]
    assert sci["outcome"] == "skipped" and "scientific notation" in sci["reason"]
    assert by_note["empty cell"]["outcome"] == "skipped" and by_note["empty cell"]["reason"] == "empty cell"
    # without --region a number must carry its country code: 4155550123 reads as +41 (Switzerland)
    assert rows_of(numgate(ENV, "check", str(src)).stdout)[0]["e164"] != "+14155550123"
    line = one_line_error(numgate(ENV, "check", str(src), "--region", "XX", ok=False))
    assert "--region must be an ISO 3166 alpha-2 code" in line


def test_a_bad_byte_skips_its_row_and_leaves_no_partial_output(tmp_path: Path) -> None:
    src = tmp_path / "big.csv"
    with src.open("wb") as fh:
        fh.write(b"msisdn\n")
        for n in range(100_001):
            if n == 50_000:
                fh.write(b"234803\xff1234567\n")  # row 50,002 of the file: not UTF-8
            else:
                fh.write(f"2348{n:09d}\n".encode())
    out = tmp_path / "out.csv"
    p = numgate(ENV, "check", str(src), "-o", str(out), "--json")
    summary = json.loads(p.stdout)
    assert summary["rows"] == 100_000 and summary["skipped_total"] == 1
    assert summary["skipped"][0]["row"] == 50_002 and "not UTF-8" in summary["skipped"][0]["reason"]
    assert len(out.read_text().splitlines()) == 100_001  # header + every readable row
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".partial")] == []
    text = numgate(ENV, "check", str(src), "-o", str(tmp_path / "again.csv")).stderr
    assert "skipped 1 unreadable row(s): row 50002: not UTF-8" in text


def test_an_interrupted_check_leaves_no_output_file(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "big.txt"
    src.write_text("".join(f"2348{n:09d}\n" for n in range(400_000)))
    out = tmp_path / "out.csv"
    p = subprocess.Popen(
        [sys.executable, "-m", "numgate", "check", str(src), "-o", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [f for f in tmp_path.iterdir() if f.name.endswith(".partial")]:
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=30)
    assert p.returncode == 130 and "interrupted" in stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["big.txt"]


def test_outside_the_sandbox_a_live_level_needs_a_route(env: dict[str, str], tmp_path: Path) -> None:
    from conftest import aiohttp_server
    from fakes.hlrlookup import FakeHlrLookup

    live = env | {"NUMGATE_SANDBOX": "false", "NUMGATE_WABA_UPSTREAM": "simulator"}
    numgate(live, "migrate")
    src = tmp_path / "list.csv"
    src.write_text("msisdn\n2348031234560\n2348031234562\n+14155550100\n")
    p = numgate(live, "check", str(src), "--level", "5", ok=False)
    assert p.returncode == 2 and "route" in one_line_error(p).lower()
    assert [r["outcome"] for r in rows_of(numgate(live, "check", str(src)).stdout)] == ["ok"] * 3
    fake = FakeHlrLookup()
    with aiohttp_server(fake.app()) as url:
        numgate(live, "admin", "upstream", "add", "hlr", "--kind", "hlrlookup", "--base-url", url,
                "--key", fake.api_key, "--secret", fake.api_secret, "--unit-cost", "0.004")  # fmt: skip
        numgate(live, "admin", "route", "set", "--level", "5", "--country", "NG", "hlr")
        numgate(live, "admin", "route", "set", "--level", "5", "--country", "*", "simulator")
        rows = rows_of(numgate(live, "check", str(src), "--level", "5").stdout)
    assert [r["source"] for r in rows] == ["hlr", "hlr", "simulator"]
    assert (rows[0]["validity"], rows[0]["reachable"], rows[0]["network"]) == ("YES", "YES", "MTN Nigeria")
    assert (rows[1]["validity"], rows[1]["reachable"]) == ("NO", "NO")  # DEAD
    assert sorted(fake.looked_up()) == ["2348031234560", "2348031234562"]
    report = json.loads(numgate(live, "admin", "report", "margin", "--json").stdout)
    (hlr,) = [r for r in report if r["upstream"] == "hlr"]
    assert (hlr["calls"], hlr["upstream_cost"], hlr["revenue"]) == (2, "0.0080", "0.0000")  # no tenant here
