"""The contributor page's Content-Security-Policy, from the settings (no browser needed)."""

from __future__ import annotations

from ingest_api.settings import ApiSettings
from ingest_api.web import content_security_policy, load_assets

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_on_aws_the_page_may_post_to_the_uploads_bucket_and_show_the_cdn() -> None:
    settings = ApiSettings(
        database_url=DSN,
        aws_region="eu-west-1",
        uploads_bucket="acme-uploads",
        public_base_url="https://cdn.example.com/previews/",
    )
    policy = directives(content_security_policy(settings))
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "https://cdn.example.com"]
    assert policy["connect-src"] == [
        "'self'",
        "https://acme-uploads.s3.amazonaws.com",
        "https://acme-uploads.s3.eu-west-1.amazonaws.com",
    ]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]


def test_without_a_cdn_images_come_from_the_previews_bucket() -> None:
    settings = ApiSettings(database_url=DSN, aws_region="us-east-1")
    policy = directives(content_security_policy(settings))
    assert policy["img-src"] == ["'self'", "https://ingest-previews.s3.amazonaws.com"]
    local = ApiSettings(database_url=DSN, aws_endpoint_url="http://127.0.0.1:5000")
    policy = directives(content_security_policy(local))
    assert policy["img-src"] == ["'self'", "http://127.0.0.1:5000"]
    assert policy["connect-src"] == ["'self'", "http://127.0.0.1:5000"]


def test_the_page_ships_with_the_package() -> None:
    assets = load_assets()
    assert {"index.html", "app.css", "js/main.js", "js/sse.js", "js/upload.js", "js/api.js"} <= set(
        assets
    )
    assert assets["index.html"].content_type.startswith("text/html")
    assert assets["js/main.js"].content_type.startswith("text/javascript")
    html = assets["index.html"].body.decode()
    assert "<script>" not in html  # no inline script: the policy forbids it
    assert "style=" not in html
    assert "http://" not in html  # nothing from elsewhere
    assert "https://" not in html
