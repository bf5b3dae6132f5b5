"""A DEMO order system as an MCP server over stdio: what examples/manifests/support-agent.yaml grants its agent.

    python -m agentflow.examples.order_server          (stdio; a ToolPolicy runs it as command: [python, -m, ...])

Written with the official MCP SDK's server side (``MCPServer``, FastMCP before mcp 2). It is not an order
system: it answers from ``ORDERS``, a small made-up table in this module, the same way every time, so the
example runs offline and its journal is the same on every machine. Point a ToolPolicy at your real order
system's MCP server instead.

Tools:

    order_status(order)        an order's status, items, payments and shipment (the support agent is granted it)
    customer_orders(customer)  every order of a customer: listed by the server, NOT granted by the example's
                               ToolPolicy (mcp.tools: [order_status]), so the agent is never offered it

An unknown order or customer is a tool error (``isError``), which the caller sees as McpToolError.
"""

from __future__ import annotations

import copy
from typing import Any

from mcp.server.mcpserver import MCPServer

__all__ = ["ORDERS", "build", "main"]

ORDERS: dict[str, dict[str, Any]] = {
    "4411": {
        "order": "4411",
        "customer": "c-1029",
        "status": "delivered",
        "placed": "2026-11-28",
        "items": [{"sku": "KB-101", "name": "Wireless keyboard", "quantity": 1, "price": 49.90}],
        "total": 49.90,
        "currency": "EUR",
        "payments": [
            {"id": "pay-7731", "amount": 49.90, "method": "card ending 4242", "at": "2026-11-28T10:02:11Z",
             "state": "captured"},
            {"id": "pay-7732", "amount": 49.90, "method": "card ending 4242", "at": "2026-11-28T10:02:14Z",
             "state": "captured", "note": "same amount and card 3 s after pay-7731: a duplicate charge"},
        ],
        "shipment": {"carrier": "DHL", "tracking": "DE4411000012", "delivered": "2026-12-01"},
    },
    "4412": {
        "order": "4412",
        "customer": "c-1029",
        "status": "shipped",
        "placed": "2026-12-03",
        "items": [{"sku": "MS-220", "name": "Mouse", "quantity": 2, "price": 19.50}],
        "total": 39.00,
        "currency": "EUR",
        "payments": [{"id": "pay-7790", "amount": 39.00, "method": "card ending 4242",
                      "at": "2026-12-03T16:40:00Z", "state": "captured"}],
        "shipment": {"carrier": "DHL", "tracking": "DE4412000031", "delivered": None},
    },
    "5003": {
        "order": "5003",
        "customer": "c-2210",
        "status": "processing",
        "placed": "2026-12-05",
        "items": [{"sku": "HD-900", "name": "Headset", "quantity": 1, "price": 89.00}],
        "total": 89.00,
        "currency": "EUR",
        "payments": [{"id": "pay-7804", "amount": 89.00, "method": "PayPal", "at": "2026-12-05T09:12:45Z",
                      "state": "authorized"}],
        "shipment": None,
    },
}
"""The demo's orders: made up, never changed by a call."""


def build() -> MCPServer:
    """The server and its two tools, over ``ORDERS``."""
    app: MCPServer = MCPServer(
        "agentflow-demo-orders",
        instructions="A demo order system for AgentFlow's examples: made-up orders 4411, 4412 and 5003.",
    )

    @app.tool()
    def order_status(order: str) -> dict[str, Any]:
        """An order's status, items, total, payments (a duplicate charge is two captured payments) and shipment."""
        found = ORDERS.get(order.strip().removeprefix("#"))
        if found is None:
            raise ValueError(f"no order {order!r} (this demo order system knows {', '.join(ORDERS)})")
        return copy.deepcopy(found)

    @app.tool()
    def customer_orders(customer: str) -> list[dict[str, Any]]:
        """Every order of a customer (its number, status and total), newest first."""
        mine = [o for o in ORDERS.values() if o["customer"] == customer]
        if not mine:
            raise ValueError(f"no customer {customer!r}")
        return [{"order": o["order"], "status": o["status"], "total": o["total"]}
                for o in sorted(mine, key=lambda o: str(o["placed"]), reverse=True)]

    return app


def main() -> None:
    build().run()  # stdio: JSON-RPC on stdin/stdout, logs on stderr


if __name__ == "__main__":
    main()
