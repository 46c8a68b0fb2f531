// A Go target for the runtime tests: goroutines that sleep, one that computes without
// pause (so that the runtime preempts it with SIGURG), one blocked on a channel, one
// locked to its thread in a system call, one in C code (cgo builds), one 2000 frames
// deep in a system call (a goroutine stack far over 128 KiB). It prints
// "READY <pid> <1 if cgo>" once they all run, then for each line read on stdin
// "TICK <busy loop iterations> <SIGUSR1 received>" (progress and signal handling after
// a dump).
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var spins uint64
var usr1 uint64

//go:noinline
func sleeper(id int, wg *sync.WaitGroup) {
	wg.Done()
	for {
		time.Sleep(time.Hour)
	}
}

//go:noinline
func busy(wg *sync.WaitGroup) {
	wg.Done()
	x := uint64(1)
	for {
		// No function calls: only asynchronous preemption (SIGURG) can stop this loop.
		for i := 0; i < 1000000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		atomic.AddUint64(&spins, 1+(x&0))
	}
}

//go:noinline
func blocked(ch chan int, wg *sync.WaitGroup) {
	wg.Done()
	<-ch
}

//go:noinline
func locked(wg *sync.WaitGroup) {
	// A goroutine wired to its own OS thread, parked in a system call.
	runtime.LockOSThread()
	wg.Done()
	var buf [1]byte
	fds := make([]int, 2)
	syscall.Pipe(fds)
	syscall.Read(fds[0], buf[:])
}

// deep recurses n frames (about 300 bytes each: a goroutine stack of several hundred KiB)
// and then blocks in a read(2), so that a thread sits on a deep goroutine stack.
//
//go:noinline
func deep(n int, fd int, wg *sync.WaitGroup) byte {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		wg.Done()
		var buf [1]byte
		syscall.Read(fd, buf[:])
		return buf[0]
	}
	return deep(n-1, fd, wg) + pad[(n*7)%256]
}

func main() {
	var wg sync.WaitGroup
	ch := make(chan int)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1)
	go func() {
		for range sigs {
			atomic.AddUint64(&usr1, 1)
		}
	}()
	wg.Add(8)
	for i := 0; i < 3; i++ {
		go sleeper(i, &wg)
	}
	go busy(&wg)
	go blocked(ch, &wg)
	go locked(&wg)
	go cgoPark(&wg)
	go func() {
		fds := make([]int, 2)
		syscall.Pipe(fds)
		deep(2000, fds[0], &wg)
	}()
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	fmt.Printf("READY %d %d\n", os.Getpid(), map[bool]int{false: 0, true: 1}[withCgo])
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Printf("TICK %d %d\n", atomic.LoadUint64(&spins), atomic.LoadUint64(&usr1))
	}
	ch <- 1
}
