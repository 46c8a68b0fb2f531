// Go under `generate_dump run` (tests/test_run.py). Modes:
//   gopreempt busy ROUNDS STATUS: two goroutines spin in loops without calls, so only
//     asynchronous preemption (SIGURG) can stop them; main runs ROUNDS garbage collections,
//     each of which must stop the world and so preempt every spinner, then exits STATUS.
//     A lost SIGURG leaves the collection, and main, stuck.
//   gopreempt crash: a nil pointer dereference in crashHere (GOTRACEBACK=crash makes the
//     runtime end with SIGABRT, writing a core).
//   gopreempt hang: prints READY, then spins and sleeps forever.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

var sink [4]uint64

//go:noinline
func spin(i int) {
	for {
		sink[i]++
	}
}

type node struct{ next *node }

//go:noinline
func crashHere(n *node) *node { return n.next }

func main() {
	mode := "busy"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "busy":
		rounds, _ := strconv.Atoi(os.Args[2])
		status, _ := strconv.Atoi(os.Args[3])
		for i := 0; i < 2; i++ {
			go spin(i)
		}
		for r := 0; r < rounds; r++ {
			runtime.GC()
			_ = make([]byte, 1<<16)
		}
		fmt.Println("rounds", rounds)
		os.Exit(status)
	case "crash":
		fmt.Println(crashHere(nil))
	case "hang":
		for i := 0; i < 2; i++ {
			go spin(i)
		}
		fmt.Println("READY")
		for {
			time.Sleep(time.Hour)
		}
	}
}
