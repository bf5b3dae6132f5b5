"""Approval notifications (issue 17): what is sent when (plan.py, pure), its text (message.py, pure) and how it
is sent (delivery.py: SMTP and Slack-compatible webhooks). The operator's service is
agentflow.services.notifications."""
