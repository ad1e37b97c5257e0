/* The platform layer: what the C standard and CPython's API leave to the
 * operating system and the compiler.
 *
 * cfutures sleeps only through CPython's thread API (PyThread_* locks, in
 * event.c) and reads the clock through CPython's (compat.h,
 * cf_monotonic_ns), so the rest is the polling that comes before a sleep:
 * giving up the CPU, a CPU pause hint, a few atomic loads and stores, and
 * thread-local variables.  GCC and Clang (Linux, the BSDs, macOS) use
 * their builtins.  CI builds and tests Linux x86_64 with GCC only; the
 * MSVC branches (yield, pause, thread-locals) are written to its
 * documentation, but the atomics are not yet (see there). */
#ifndef CFUTURES_PLATFORM_H
#define CFUTURES_PLATFORM_H

#include <Python.h>

#ifdef MS_WINDOWS
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#else
#  include <sched.h>
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
#  define CF_MSVC 1
#endif

/* ---- giving up the CPU ------------------------------------------------ */

/* Let another ready thread run on this CPU (a woken thread is often put on
 * the waker's CPU), then come back: the body of every poll before a sleep.
 * Both are a system call, not a sleep. */
static inline void
cf_yield(void)
{
#ifdef MS_WINDOWS
    (void)SwitchToThread();
#else
    (void)sched_yield();
#endif
}

/* A hint to the CPU that this is a busy-wait (saves power, and the other
 * hyperthread gets the core). */
#if defined(CF_MSVC)
#  define CF_CPU_RELAX() YieldProcessor()
#elif defined(__x86_64__) || defined(__i386__)
#  define CF_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#  define CF_CPU_RELAX() __asm__ __volatile__("yield")
#else
#  define CF_CPU_RELAX() ((void)0)
#endif

/* ---- atomics ---------------------------------------------------------- */

/* The one set of atomics, with the memory order in the name, for the
 * flags a thread polls without the GIL and for every guard of the
 * free-threaded build (README, "Concurrency model").  They are the
 * GCC/Clang builtins CPython's own pyatomic_gcc.h uses, generic over the
 * integer and pointer types; on a GIL build they cost a plain load or
 * store, except the read-modify-writes.  MSVC has no such generic
 * builtins: a Windows port needs these five written with its
 * Interlocked intrinsics (or, from 3.13, CPython's _Py_atomic_*). */
#ifdef CF_MSVC
#  error "cfutures does not build with MSVC yet: see platform.h, atomics"
#endif
#define cf_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define cf_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define cf_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define cf_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* Returns the old value. */
#define cf_fetch_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define cf_exchange(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
/* 1 if *p was *expected and is now desired, else 0 and *expected = *p. */
#define cf_cas(p, expected, desired)                                      \
    __atomic_compare_exchange_n((p), (expected), (desired), 0,            \
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/* ---- thread-local variables -------------------------------------------- */

#ifdef CF_MSVC
#  define CF_THREAD_LOCAL __declspec(thread)
#else
#  define CF_THREAD_LOCAL _Thread_local
#endif

#endif /* CFUTURES_PLATFORM_H */
