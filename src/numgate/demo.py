"""The demo tenant that ``make run`` creates the first time, and the example it prints."""

from __future__ import annotations

import secrets
from typing import Any

import phonenumbers
from sqlalchemy import select

from numgate.core import Core
from numgate.db.tables import meta

DEMO_KEY = "demo_account_id"
#: the console's demo users; their passwords kept encrypted (only for the demo: printed each start)
DEMO_USERS = (
    ("operator@demo.numgate", "demo_operator_password", None),
    ("tenant@demo.numgate", "demo_tenant_password", "tenant"),
)
DEMO_PRICES = {1: 10, 4: 150, 5: 50}  # ten-thousandths of a USD: 0.0010, 0.0150, 0.0050
DEMO_BALANCE = 100 * 10_000


async def ensure_demo(core: Core) -> dict[str, Any]:
    """Create (once) an integrator account with both businesses, an app, prices and a balance."""
    async with core.db.read() as tx:
        existing = await tx.scalar(select(meta.c.value).where(meta.c.key == DEMO_KEY))
    if existing is None:
        acct, _ = await core.tenancy.create_account("demo", integrator=True, number_check=True, whatsapp=True)
        await core.tenancy.create_app(acct.id, "demo app")
        table = [
            (r, lvl, p) for r in sorted(phonenumbers.SUPPORTED_REGIONS) for lvl, p in DEMO_PRICES.items()
        ]
        await core.ledger.set_prices(table, account_id=acct.id)
        await core.ledger.topup(acct.id, DEMO_BALANCE, "USD", "demo starting balance")
        async with core.db.write() as tx:
            await tx.run(meta.insert().values(key=DEMO_KEY, value=str(acct.id)))
        account_id = acct.id
    else:
        account_id = int(existing)
    creds = (await core.tenancy.credentials(account_id))[0]
    app = (await core.tenancy.list_apps(account_id))[0]
    return {
        "account_id": account_id,
        "access_key": creds.access_key,
        "access_secret": creds.access_secret,
        "appkey": app.appkey,
        "console": await _demo_users(core, account_id),
    }


async def _demo_users(core: Core, account_id: int) -> list[dict[str, str]]:
    """The demo operator and tenant user (created the first time), with their passwords."""
    out = []
    for email, key, role in DEMO_USERS:
        async with core.db.read() as tx:
            stored = await tx.scalar(select(meta.c.value).where(meta.c.key == key))
        if stored is None:
            password = secrets.token_urlsafe(12)
            await core.users.create(email, password, account_id=account_id if role else None)
            async with core.db.write() as tx:
                await tx.run(meta.insert().values(key=key, value=core.vault.encrypt(password)))
        else:
            password = core.vault.decrypt(stored)
        out.append({"email": email, "password": password, "role": role or "operator"})
    return out


def example_text(info: dict[str, Any], base_url: str) -> str:
    k, s, a = info["access_key"], info["access_secret"], info["appkey"]
    console = "".join(
        f"  {u['role']:<9} {u['email']:<24} password {u['password']}\n" for u in info.get("console", [])
    )
    body = f'{{"phone":"2348031234567,2348059876543","checkLevel":1,"appkey":"{a}"}}'
    return f"""
numgate demo tenant (sandbox mode)
  account id    {info["account_id"]}
  accessKey     {k}
  accessSecret  {s}
  appkey        {a}

Try it (bash, in another terminal): a signed NXCloud Number Check submit
  ts=$(date +%s%3N); body='{body}'
  sign=$(printf '%s' "accessKey={k}&action=numbercheck&bizType=1&ts=$ts&body=$body&accessSecret={s}" | md5sum | cut -d' ' -f1)
  curl -s {base_url}/api/number/check -H 'Content-Type: application/json' -H 'accessKey: {k}' -H "ts: $ts" -H 'bizType: 1' -H 'action: numbercheck' -H "sign: $sign" -d "$body"

Or from Python (.venv/bin/python):
  from numgate.client import NxClient
  nx = NxClient("{base_url}", "{k}", "{s}")
  print(nx.number_check("2348031234567", appkey="{a}"))

The console: {base_url}/console
{console}
WhatsApp onboarding: the appkey is also the CAMS CustSpaceId; the same keys open both doors.
  .venv/bin/numgate admin number add {a} 8613800001234 --name "Demo Shop"
  then getCode / checkCode / createClient (NXCloud) or the alibabacloud-cams20200606 SDK with
  endpoint="{base_url.split("://", 1)[-1]}", protocol="http"; read codes with: .venv/bin/numgate sandbox outbox
"""
