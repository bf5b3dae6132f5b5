"""What runs inside a step pod (`agentflow step`): fetch one attempt, run it, post its result.

    step.py     main() / run_step(): configuration from the environment, the attempt's life, exit status
    client.py   CallbackClient (GET the attempt, POST the result, bounded retries) over the one HTTP seam
                (Transport; AiohttpTransport is the only code here that imports aiohttp)
    logs.py     JsonLog: one JSON object per line on stderr, the token redacted

Nothing is imported or built here at import time: `agentflow step` imports ``agentflow.runtime.step``.
The pod's contract (environment, exit status, filesystem) is in runtime-image/README.md.
"""
