// argocd-health runs an Argo CD resource health script (Lua) the way Argo CD does: in gopher-lua, with
// only the package, base and table libraries opened, the object as the global `obj` (JSON objects as
// tables, arrays as sequences, numbers as Lua numbers), and the returned table read as {status, message}.
// (Argo CD also opens a restricted `os`; AgentFlow's script does not use it.)
//
//	argocd-health SCRIPT.lua < objects.jsonl
//
// Input: one JSON object a line on stdin. Output: one JSON line each, {"status": ..., "message": ...} or
// {"error": ...}; a status Argo CD does not know is an error, as in Argo CD.
// Built by tests/e2e/tools/gotool.sh into $AGENTFLOW_CACHE; used by tests/unit/k8s/test_gitops_health.py.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type answer struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

var known = map[string]bool{"Healthy": true, "Progressing": true, "Suspended": true, "Degraded": true,
	"Missing": true, "Unknown": true}

func decode(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for key, item := range v {
			t.RawSetString(key, decode(l, item))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(decode(l, item))
		}
		return t
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case nil:
		return lua.LNil
	}
	return lua.LNil
}

func health(script string, line []byte) answer {
	var obj map[string]interface{}
	if err := json.Unmarshal(line, &obj); err != nil {
		return answer{Error: fmt.Sprintf("not an object: %v", err)}
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return answer{Error: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		return answer{Error: err.Error()}
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return answer{Error: fmt.Sprintf("the script returned %s, not a table", l.Get(-1).Type())}
	}
	out := answer{Status: table.RawGetString("status").String(), Message: table.RawGetString("message").String()}
	if table.RawGetString("message") == lua.LNil {
		out.Message = ""
	}
	if !known[out.Status] {
		return answer{Error: fmt.Sprintf("health status %q is not one Argo CD knows", out.Status)}
	}
	return out
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health SCRIPT.lua < objects.jsonl")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		if err := out.Encode(health(string(script), in.Bytes())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
