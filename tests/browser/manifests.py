"""Manifests the browser tests run: model calls answered by the offline model, no network."""

RESOURCES = """\
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: assistant}
spec:
  role: assistant
  instructions: Answer briefly.
  model: {name: openai/gpt-4o-mini}
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptVersion
metadata: {name: answer-v1}
spec:
  prompt: answer
  version: "1"
  messages:
    - {role: user, content: "Answer: ${{ inputs.question }}"}
  outputSchema:
    type: object
    required: [answer]
    properties: {answer: {type: string}}
"""

# gate (a human) -> draft (a model call) -> done (a human): the run waits at gate until someone decides.
REVIEWED = """\
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: reviewed}
spec:
  inputs: {question: "Where is my parcel?"}
  steps:
    - name: gate
      kind: approval
      approval: {message: "Start drafting?"}
    - name: draft
      kind: llm
      dependsOn: [gate]
      agentRef: {name: assistant}
      promptRef: {name: answer-v1}
      inputs: {question: "${{ inputs.question }}"}
    - name: done
      kind: approval
      dependsOn: [draft]
      approval: {message: "Send ${{ steps.draft.output.answer }}?", approvers: [alice]}
---
""" + RESOURCES
