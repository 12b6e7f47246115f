"""Uploading suites through the page and the API: whole or nothing, every problem with its file and line."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from arena.benchmarks.models import Suite, SuiteItem
from arena.teams.models import ApiToken, Role
from tests.arena.helpers import ITEMS, MANIFEST, jsonl
from tests.helpers import csrf_client

pytestmark = pytest.mark.django_db


def upload(api, files: dict, **extra):
    return api("post", "/suites", {"format": "suite", "files": files, **extra})


def test_a_suite_uploads_through_the_api_and_the_same_content_again_is_the_same_suite(api, team):
    first = upload(api, {"manifest": MANIFEST, "items": ITEMS})
    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["name"], body["version"], body["items"], body["task_type"]) == ("capitals", "1", 3, "generation")
    again = upload(api, {"manifest": MANIFEST, "items": ITEMS})
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]
    assert Suite.objects.filter(team=team).count() == 1


def test_changed_items_under_a_used_version_become_a_new_version_and_the_old_one_stays(api, team):
    old = upload(api, {"manifest": MANIFEST, "items": ITEMS}).json()
    changed = ITEMS.replace("Rome", "Roma")
    new = upload(api, {"manifest": MANIFEST, "items": changed})
    assert new.status_code == 201
    assert new.json()["version"].startswith("1+")
    assert new.json()["content_hash"] != old["content_hash"]
    assert SuiteItem.objects.get(suite_id=old["id"], key="it").data["reference"] == "Rome"


@pytest.mark.parametrize(
    ("files", "where", "message"),
    [
        ({"manifest": MANIFEST, "items": ITEMS + "{not json\n"}, ("items.jsonl", 4), "invalid JSON"),
        (
            {
                "manifest": MANIFEST,
                "items": ITEMS + jsonl({"id": "fr", "input": "x", "reference": "y", "split": "dev"}),
            },
            ("items.jsonl", 4),
            "duplicate item id 'fr' (first on line 1)",
        ),
        (
            {"manifest": MANIFEST, "items": jsonl({"id": "a", "input": "x", "split": "dev"})},
            ("items.jsonl", 1),
            "reference",
        ),
        ({"manifest": MANIFEST.replace("exact_match", "exact_mach"), "items": ITEMS}, ("suite.yaml", 6), "exact_match"),
        (
            {"manifest": "name: !!python/object/apply:os.system ['true']\n", "items": ITEMS},
            ("suite.yaml", 1),
            "invalid YAML",
        ),
        (
            {"manifest": MANIFEST, "items": jsonl({"id": "a", "input": "x", "reference": "y", "split": "train"})},
            ("items.jsonl", 1),
            "unknown split 'train'",
        ),
    ],
    ids=["bad-json", "duplicate-id", "missing-reference", "unknown-metric", "python-tag", "unknown-split"],
)
def test_a_bad_upload_is_a_422_naming_file_and_line_and_stores_nothing(api, team, files, where, message):
    response = upload(api, files)
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert (detail["file"], detail["line"]) == where
    assert message in detail["message"]
    assert not Suite.objects.exists()
    assert not SuiteItem.objects.exists()


def test_multiple_choice_gold_out_of_range_is_reported_on_its_line(api):
    manifest = MANIFEST.replace("generation", "multiple_choice").replace("{input}", "{input}\\n{choices}")
    manifest = manifest.replace("first_line", "letter")
    items = jsonl(
        {"id": "a", "input": "2+2?", "choices": ["3", "4"], "gold": 1, "split": "dev"},
        {"id": "b", "input": "3+3?", "choices": ["6", "7"], "gold": 2, "split": "test"},
    )
    response = upload(api, {"manifest": manifest, "items": items}, filenames={"items": "mc.jsonl"})
    assert response.status_code == 422
    assert response.json()["detail"]["error"] == "mc.jsonl:2: gold 2 out of range 0..1"
    assert not Suite.objects.exists()


def test_size_and_item_limits_refuse_the_whole_upload(api, settings):
    settings.ARENA_SUITE_MAX_BYTES = 2048
    big = upload(api, {"manifest": MANIFEST, "items": ITEMS + " " * 3000})
    assert big.status_code == 422
    assert "larger than the limit of 2,048 bytes" in big.json()["detail"]["error"]
    settings.ARENA_SUITE_MAX_BYTES = 1 << 20
    settings.ARENA_SUITE_MAX_ITEMS = 2
    many = upload(api, {"manifest": MANIFEST, "items": ITEMS})
    assert many.status_code == 422
    assert many.json()["detail"]["error"] == "items.jsonl:3: more than the limit of 2 items"
    assert not Suite.objects.exists()


def test_text_postgres_cannot_store_and_over_long_ids_are_clear_errors(api):
    nul = upload(
        api, {"manifest": MANIFEST, "items": jsonl({"id": "a", "input": "x\u0000", "reference": "y", "split": "dev"})}
    )
    assert nul.status_code == 422
    assert "NUL" in nul.json()["detail"]["message"]
    long_id = upload(
        api, {"manifest": MANIFEST, "items": jsonl({"id": "x" * 101, "input": "x", "reference": "y", "split": "dev"})}
    )
    assert long_id.status_code == 422
    assert long_id.json()["detail"]["line"] == 1
    assert not Suite.objects.exists()


def test_wrong_file_roles_and_missing_files_are_422(api):
    assert upload(api, {"manifest": MANIFEST}).status_code == 422
    unknown = upload(api, {"manifest": MANIFEST, "items": ITEMS, "extra": "x"})
    assert unknown.status_code == 422
    assert "unknown: extra" in unknown.json()["detail"]["files"][0]


def test_bigbench_csv_and_lm_eval_uploads_import(api):
    task = {
        "name": "sums",
        "description": "small sums",
        "examples": [{"input": f"{i}+1=", "target_scores": {str(i + 1): 1, str(i + 2): 0}} for i in range(10)],
    }
    bb = api("post", "/suites", {"format": "bigbench", "files": {"task": json.dumps(task)}})
    assert bb.status_code == 201, bb.content
    assert (bb.json()["name"], bb.json()["task_type"], bb.json()["items"]) == ("sums", "multiple_choice", 10)

    csv_text = "question,answer\n" + "".join(f"{i}+{i}?,{2 * i}\n" for i in range(8))
    csv = api(
        "post",
        "/suites",
        {
            "format": "csv",
            "files": {"csv": csv_text},
            "name": "doubles",
            "columns": {"input": "question", "reference": "answer"},
        },
    )
    assert csv.status_code == 201, csv.content
    assert csv.json()["items"] == 8

    config = "task: boolq_local\noutput_type: generate_until\nvalidation_split: validation\ntest_split: test\n"
    config += "doc_to_text: question\ndoc_to_target: answer\n"
    docs = jsonl(*({"question": f"q{i}?", "answer": "yes"} for i in range(3)))
    lm = api("post", "/suites", {"format": "lm_eval", "files": {"config": config, "validation": docs, "test": docs}})
    assert lm.status_code == 201, lm.content
    assert lm.json()["items"] == 6


def test_a_csv_upload_without_a_mapping_is_a_clear_error(api):
    response = api("post", "/suites", {"format": "csv", "files": {"csv": "a,b\n1,2\n"}, "name": "x"})
    assert response.status_code == 422
    assert "column mapping" in response.json()["detail"]["message"]


def test_a_viewer_token_cannot_upload(api, team):
    _, raw = ApiToken.issue(team, "read-only", role=Role.VIEWER)
    response = api("post", "/suites", {"format": "suite", "files": {"manifest": MANIFEST, "items": ITEMS}}, auth=raw)
    assert response.status_code == 403
    assert not Suite.objects.exists()


def _files(manifest: str = MANIFEST, items: str = ITEMS) -> dict:
    return {
        "suite-manifest": SimpleUploadedFile("capitals.yaml", manifest.encode()),
        "suite-items": SimpleUploadedFile("capitals.jsonl", items.encode()),
    }


def _page_client(user):
    client = csrf_client(user)
    client.get("/t/red/suites/")  # sets the CSRF cookie
    return client


def _post_upload(client, data: dict):
    return client.post(
        "/t/red/suites/upload/",
        {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
        follow=True,
    )


def test_a_member_uploads_through_the_page_and_lands_on_the_suite(teammate, team):
    client = _page_client(teammate)
    response = _post_upload(client, {"format": "suite", **_files()})
    assert response.status_code == 200
    suite = Suite.objects.get(team=team, name="capitals")
    assert response.redirect_chain[-1][0] == f"/t/red/suites/{suite.pk}/"
    assert b"Imported capitals v1 (3 items)" in response.content
    assert b"Capital of Germany?" in response.content


def test_a_bad_page_upload_shows_file_and_line_and_stores_nothing(teammate, team):
    client = _page_client(teammate)
    response = _post_upload(client, {"format": "suite", **_files(items=ITEMS + "[1, 2]\n")})
    assert b"Nothing was imported. capitals.jsonl:4: each line must be a JSON object" in response.content
    assert not Suite.objects.exists()


def test_a_non_utf8_file_is_refused_with_its_name(teammate, team):
    client = _page_client(teammate)
    files = _files()
    files["suite-items"] = SimpleUploadedFile("latin.jsonl", b'{"id": "a", "input": "caf\xe9"}\n')
    response = _post_upload(client, {"format": "suite", **files})
    assert b"latin.jsonl:1: not UTF-8 text" in response.content
    assert not Suite.objects.exists()


def test_a_page_upload_over_the_limit_is_refused(teammate, team, settings):
    settings.ARENA_SUITE_MAX_BYTES = 1024
    client = _page_client(teammate)
    response = _post_upload(client, {"format": "suite", **_files(items=ITEMS + " " * 2000)})
    assert b"capitals.jsonl: file is larger than the limit of 1,024 bytes" in response.content
    assert not Suite.objects.exists()


def test_viewers_cannot_upload_and_outsiders_see_nothing(viewer, outsider, team, api):
    suite_id = upload(api, {"manifest": MANIFEST, "items": ITEMS}).json()["id"]
    viewer_client = _page_client(viewer)
    assert (
        _post_upload(viewer_client, {"format": "suite", **_files(items=ITEMS.replace("Rome", "R"))}).status_code == 403
    )
    assert Suite.objects.count() == 1
    assert viewer_client.get(f"/t/red/suites/{suite_id}/").status_code == 200
    stranger = csrf_client(outsider)
    assert stranger.get("/t/red/suites/").status_code == 404
    assert stranger.get(f"/t/red/suites/{suite_id}/").status_code == 404
    assert stranger.get(f"/t/blue/suites/{suite_id}/").status_code == 404
