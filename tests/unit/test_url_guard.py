"""Which webhook URLs may be called: private, loopback, link-local and metadata addresses
are refused in any spelling; names are judged by what they resolve to."""

from __future__ import annotations

import pytest

from payorch.adapters.webhooks.url_guard import UrlGuard, UrlRefused

DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "rebind.example": ["127.0.0.1"],
    "metadata.google.internal": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "10.0.0.7"],
    "v6private.example": ["fd00:ec2::254"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError("Name or service not known")
    return DNS[host]


REFUSED = [
    "http://2130706433/",
    "https://2130706433/",
    "https://0x7f.0.0.1/",
    "https://0x7f000001/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://127.000.000.001/",
    "https://127.0.0.1./",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::1]/",
    "https://[::]/",
    "https://0.0.0.0/",
    "https://localhost/",
    "https://127.0.0.1/",
    "https://10.1.2.3/",
    "https://172.16.0.1/",
    "https://192.168.1.10/",
    "https://100.64.0.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://[fe80::1]/",
    "https://[fec0::1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[2002:7f00:1::]/",
    "https://224.0.0.1/",
    "https://rebind.example/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://mixed.example/",
    "https://v6private.example/",
    "https://nowhere.invalid/",
    "http://hooks.example.com/",
    "ftp://hooks.example.com/",
    "file:///etc/passwd",
    "https://user:pass@hooks.example.com/",
    "https://hooks.example.com@127.0.0.1/",
    "https://hooks.example.com/\r\nx",
    "https:///nohost",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_a_refused_url_is_refused(url):
    guard = UrlGuard(resolve=fake_resolve)
    with pytest.raises(UrlRefused):
        await guard.check(url)


# Dev mode allows exactly these spellings of loopback (over http or https).
DEV_ALLOWED = ("https://127.0.0.1/", "https://localhost/", "https://[::1]/")


@pytest.mark.parametrize("url", [u for u in REFUSED if u not in DEV_ALLOWED])
async def test_the_loopback_dev_mode_still_refuses_every_other_spelling(url):
    guard = UrlGuard(allow_http_loopback=True, resolve=fake_resolve)
    with pytest.raises(UrlRefused):
        await guard.check(url)


async def test_a_public_https_url_is_pinned_to_the_address_it_resolved_to():
    checked = await UrlGuard(resolve=fake_resolve).check("https://hooks.example.com:8443/in")
    assert (checked.host, checked.port, checked.address) == (
        "hooks.example.com",
        8443,
        "93.184.216.34",
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8088/hooks", "http://localhost:9/x", "http://[::1]:8088/"]
)
async def test_dev_mode_allows_plain_http_to_loopback_written_plainly(url):
    checked = await UrlGuard(allow_http_loopback=True).check(url)
    assert checked.address in ("127.0.0.1", "::1")
    with pytest.raises(UrlRefused):
        await UrlGuard().check(url)
