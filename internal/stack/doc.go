// Package stack supervises the local stack: Azurite, the Microsoft 365
// simulator, the dispatcher and its workers, each as a process of its own
// on this machine, as deploy/demo shows them and bench measures them.
//
// It builds the daemons once (Build), starts Azurite from the project's
// pinned copy (StartAzurite: disk or memory persistence, restartable on the
// same ports), the simulator (StartSim, or in the caller's process), the
// dispatcher and N workers configured through their CPV_* environment
// (StartDaemons), waits until each is ready, talks to the dispatcher's API
// (Client) and stops everything in order: workers first, so that nothing
// they hold is lost, then the dispatcher, then what they depend on.
//
// Every child process gets SIGKILL when this process dies (Pdeathsig), so
// a crashed harness leaves nothing running. Stops are graceful (SIGTERM)
// and become a kill after a deadline.
//
// Tests reach Azurite through internal/testenv, which uses StartAzurite;
// this package is for programs (deploy/demo) and the bench harness, and
// imports nothing from internal/testenv.
package stack
