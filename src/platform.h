/* The platform layer: what the C standard and CPython's API leave to the
 * operating system and the compiler.
 *
 * cfutures sleeps only through CPython's thread API (PyThread_* locks, in
 * event.c) and reads the clock through CPython's (compat.h,
 * cf_monotonic_ns), so the rest is the polling that comes before a sleep:
 * giving up the CPU, a CPU pause hint, a few atomic loads and stores, and
 * thread-local variables.  GCC and Clang (Linux, the BSDs, macOS) use
 * their builtins; MSVC (Windows) its intrinsics.  CI builds and tests
 * Linux x86_64 with GCC only: the other branches are written to the
 * compilers' documentation but no machine here compiles them. */
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
#  define CF_MSVC_ATOMICS 1
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
#if defined(CF_MSVC_ATOMICS)
#  define CF_CPU_RELAX() YieldProcessor()
#elif defined(__x86_64__) || defined(__i386__)
#  define CF_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#  define CF_CPU_RELAX() __asm__ __volatile__("yield")
#else
#  define CF_CPU_RELAX() ((void)0)
#endif

/* ---- atomics ---------------------------------------------------------- */

/* Only for the flags a thread polls without the GIL (event, future state,
 * to_thread handoff); everything else changes under the GIL.  MSVC's
 * Interlocked operations are full barriers: stronger than asked, and
 * correct on x64 and ARM64 alike. */
static inline int
cf_atomic_load_int(const int *p)
{
#ifdef CF_MSVC_ATOMICS
    return (int)_InterlockedOr((volatile long *)p, 0);
#else
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

static inline unsigned char
cf_atomic_load_uchar(const unsigned char *p)
{
#ifdef CF_MSVC_ATOMICS
    return (unsigned char)_InterlockedOr8((volatile char *)p, 0);
#else
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

static inline void
cf_atomic_store_int(int *p, int value)
{
#ifdef CF_MSVC_ATOMICS
    (void)_InterlockedExchange((volatile long *)p, value);
#else
    __atomic_store_n(p, value, __ATOMIC_RELEASE);
#endif
}

static inline void
cf_atomic_store_uchar(unsigned char *p, unsigned char value)
{
#ifdef CF_MSVC_ATOMICS
    (void)_InterlockedExchange8((volatile char *)p, (char)value);
#else
    __atomic_store_n(p, value, __ATOMIC_RELEASE);
#endif
}

/* *p += delta; the new value.  Acquire-release. */
static inline Py_ssize_t
cf_atomic_add_ssize(Py_ssize_t *p, Py_ssize_t delta)
{
#ifdef CF_MSVC_ATOMICS
    return (Py_ssize_t)_InterlockedExchangeAdd64((volatile __int64 *)p,
                                                 delta) + delta;
#else
    return __atomic_add_fetch(p, delta, __ATOMIC_ACQ_REL);
#endif
}

/* If *p == *expected, store desired and return 1; else copy *p into
 * *expected and return 0.  Acquire-release either way. */
static inline int
cf_atomic_cas_int(int *p, int *expected, int desired)
{
#ifdef CF_MSVC_ATOMICS
    long old = _InterlockedCompareExchange((volatile long *)p, desired,
                                           *expected);
    if (old == *expected) {
        return 1;
    }
    *expected = (int)old;
    return 0;
#else
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
#endif
}

/* ---- thread-local variables -------------------------------------------- */

#ifdef CF_MSVC_ATOMICS
#  define CF_THREAD_LOCAL __declspec(thread)
#else
#  define CF_THREAD_LOCAL _Thread_local
#endif

#endif /* CFUTURES_PLATFORM_H */
