"""The endpoint step pods fetch their attempt from and post their results to (:mod:`.server`).

Who may call it is decided by an injected authenticator (agentflow.security.identity); the tokens of
attempts are agentflow.security.tokens.
"""
