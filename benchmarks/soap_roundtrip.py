"""SOAP round-trip cost: our client against a bare aiohttp POST of the same bytes.

Both run in the same process against the same vcsim, so the ratio shows what
pyVmomi serialization, deserialization and our bookkeeping add to the wire
time. Run: ``.venv/bin/python -m benchmarks.soap_roundtrip``.
"""

from __future__ import annotations

import argparse
import json
import time

import anyio
from pyVmomi import vmodl

from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.session import VCenterSession
from tests.vcsim.harness import running_vcsim

PC = vmodl.query.PropertyCollector


async def measure(connection: ConnectionSettings, calls: int) -> dict[str, float]:
    async with VCenterSession(connection) as session:
        root = session.content.rootFolder
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=root)],
                             propSet=[PC.PropertySpec(type=type(root), pathSet=["name"])])
        collector = session.content.propertyCollector
        options = PC.RetrieveOptions()
        for _ in range(50):  # warm the connection pool and caches
            await session.invoke(collector, "RetrievePropertiesEx", specSet=[spec],
                                 options=options)

        started = time.perf_counter()
        for _ in range(calls):
            await session.invoke(collector, "RetrievePropertiesEx", specSet=[spec],
                                 options=options)
        ours = (time.perf_counter() - started) / calls

        # Baseline: the identical request bytes, posted raw, answer read but not parsed.
        client = session.client
        info = type(collector)._GetMethodInfo("RetrievePropertiesEx")
        body = client._stub.serialize(collector, info, [[spec], options])
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": client._stub.versionId,
                   "Cookie": f"vmware_soap_session={client.session_cookie}"}
        started = time.perf_counter()
        for _ in range(calls):
            async with client.http.post(client.endpoint.url, data=body,
                                        headers=headers) as response:
                await response.read()
        raw = (time.perf_counter() - started) / calls
    return {"ours_ms": ours * 1000, "raw_aiohttp_ms": raw * 1000, "ratio": ours / raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with running_vcsim() as vcsim:
        connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                        password=vcsim.password, ca_file=str(vcsim.ca_file))
        result = anyio.run(measure, connection, args.calls)
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    print(f"| client | ms per round trip |\n|---|---|\n"
          f"| asyncovf SoapClient | {result['ours_ms']:.3f} |\n"
          f"| bare aiohttp POST (same bytes) | {result['raw_aiohttp_ms']:.3f} |\n"
          f"| ratio | {result['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
