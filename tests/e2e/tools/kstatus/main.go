// kstatus prints the status that kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status: what Flux's health
// checks, kpt and `kubectl`-adjacent tools compute) gives each object it reads.
//
// Input: one JSON object a line on stdin. Output: one JSON line each,
// {"status": "Current|InProgress|Failed|Terminating|...", "message": "..."} or {"error": "..."}.
// Built by tests/e2e/tools/gotool.sh into $AGENTFLOW_CACHE; used by tests/unit/k8s/test_gitops_health.py.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type answer struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func compute(line []byte) answer {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(line); err != nil {
		return answer{Error: fmt.Sprintf("not an object: %v", err)}
	}
	res, err := status.Compute(u)
	if err != nil {
		return answer{Error: err.Error()}
	}
	return answer{Status: res.Status.String(), Message: res.Message}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		if err := out.Encode(compute(in.Bytes())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
