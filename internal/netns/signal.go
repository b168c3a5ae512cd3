//go:build linux

package netns

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The one signal handler shared by every Env that asked for it.
var sigState struct {
	mu   sync.Mutex
	envs map[*Env]struct{}
	ch   chan os.Signal
}

// CloseOnSignal makes SIGINT, SIGTERM and SIGHUP close e (with every other
// Env that asked) before the process dies of the signal as it would have
// without the handler: an interrupted `go test` leaves no namespaces
// behind. stop withdraws e; once no Env is left the handler is removed and
// the signals get their default action back. Programs with their own
// graceful shutdown (knockwatch lab) should call Close themselves instead.
// SIGKILL cannot be caught: NewEnv's Sweep removes what a killed run left.
func (e *Env) CloseOnSignal() (stop func()) {
	s := &sigState
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.envs == nil {
		s.envs = map[*Env]struct{}{}
	}
	s.envs[e] = struct{}{}
	if s.ch == nil {
		// A signal the process ignores (SIGINT in a background job, SIGHUP
		// under nohup) stays ignored: catching it would remove the
		// namespaces of a run that goes on.
		var sigs []os.Signal
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
			if !signal.Ignored(sig) {
				sigs = append(sigs, sig)
			}
		}
		s.ch = make(chan os.Signal, 1)
		if len(sigs) > 0 {
			signal.Notify(s.ch, sigs...)
		}
		go closeOnSignal(s.ch)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.envs, e)
			if len(s.envs) == 0 && s.ch != nil {
				signal.Stop(s.ch)
				close(s.ch)
				s.ch = nil
			}
		})
	}
}

func closeOnSignal(ch chan os.Signal) {
	sig, ok := <-ch
	if !ok {
		return
	}
	s := &sigState
	s.mu.Lock()
	envs := make([]*Env, 0, len(s.envs))
	for e := range s.envs {
		envs = append(envs, e)
	}
	s.mu.Unlock()
	for _, e := range envs {
		_ = e.Close()
	}
	// Die of the signal, as the process would have without us. Should
	// another handler have caught it meanwhile, exit the way a shell
	// reports a death by signal.
	signum := sig.(syscall.Signal)
	signal.Reset(sig)
	_ = syscall.Kill(os.Getpid(), signum)
	time.Sleep(time.Second)
	os.Exit(128 + int(signum))
}
