/* A one-shot event a thread sleeps on with the GIL released.
 *
 * Every blocking wait in cfutures (result(), wait(), as_completed(),
 * shutdown()) ends here, so this is the one place that honours timeouts and
 * lets signal handlers run, the way threading.Lock.acquire() does. */
#include "cfutures.h"

#include <time.h>

int64_t
cf_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int
cf_parse_timeout(PyObject *timeout, int64_t *timeout_ns)
{
    if (timeout == NULL || timeout == Py_None) {
        *timeout_ns = -1;
        return 0;
    }
    double secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    /* Condition.wait() tests `timeout > 0` and polls otherwise, so NaN
     * polls too. */
    if (!(secs > 0)) {
        *timeout_ns = 0;
        return 0;
    }
    /* Lock.acquire() refuses the same range. */
    if (secs * 1e6 > (double)PY_TIMEOUT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return -1;
    }
    /* The top of that range rounds to 2**63 ns: out of int64_t. */
    double ns = secs * 1e9;
    *timeout_ns = ns >= (double)INT64_MAX ? INT64_MAX : (int64_t)ns;
    return 0;
}

int
cf_event_init(cf_event *ev)
{
    ev->is_set = 0;
    ev->lock = PyThread_allocate_lock();
    if (ev->lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Held while unset: the sleeper blocks acquiring it again. */
    PyThread_acquire_lock(ev->lock, 1);
    return 0;
}

void
cf_event_fini(cf_event *ev)
{
    if (ev->lock != NULL) {
        if (!ev->is_set) {
            PyThread_release_lock(ev->lock);
        }
        PyThread_free_lock(ev->lock);
        ev->lock = NULL;
    }
}

void
cf_event_set(cf_event *ev)
{
    if (!ev->is_set) {
        ev->is_set = 1;
        PyThread_release_lock(ev->lock);
    }
}

void
cf_event_clear(cf_event *ev)
{
    if (ev->is_set) {
        /* Released by the setter and not taken since: this cannot block. */
        PyThread_acquire_lock(ev->lock, 1);
        ev->is_set = 0;
    }
}

int
cf_event_wait(cf_event *ev, int64_t timeout_ns)
{
    if (ev->is_set) {
        return 1;
    }
    int64_t deadline = 0;
    if (timeout_ns > 0) {
        /* Saturate: a timeout of centuries must not wrap to the past. */
        int64_t now = cf_monotonic_ns();
        deadline = timeout_ns > INT64_MAX - now ? INT64_MAX
                                                : now + timeout_ns;
    }
    for (;;) {
        PY_TIMEOUT_T us;
        if (timeout_ns < 0) {
            us = -1;
        }
        else if (timeout_ns == 0) {
            us = 0;
        }
        else {
            int64_t left = deadline - cf_monotonic_ns();
            us = left > 0 ? (PY_TIMEOUT_T)(left / 1000 + (left % 1000 != 0))
                          : 0;
        }
        PyLockStatus r;
        if (us == 0) {
            /* Polling needs no GIL release. */
            r = PyThread_acquire_lock_timed(ev->lock, 0, 0);
        }
        else {
            Py_BEGIN_ALLOW_THREADS
            r = PyThread_acquire_lock_timed(ev->lock, us, 1);
            Py_END_ALLOW_THREADS
        }
        if (r == PY_LOCK_ACQUIRED) {
            /* The setter released it for us; give it back so is_set and
             * the lock agree (set == released). */
            PyThread_release_lock(ev->lock);
            return 1;
        }
        if (r == PY_LOCK_INTR) {
            /* A signal arrived: run its Python handler, which may raise
             * (KeyboardInterrupt), then sleep again for what is left. */
            if (Py_MakePendingCalls() < 0) {
                return -1;
            }
            if (ev->is_set) {
                return 1;
            }
            continue;
        }
        /* Timed out; the GIL was reacquired, so a setter may have run. */
        return ev->is_set ? 1 : 0;
    }
}
