package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the child if the harness dies,
// so no proxy outlives a crashed or killed run.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
