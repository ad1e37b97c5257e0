/* The Future type: concurrent.futures.Future's state machine in C.
 *
 * Lib/concurrent/futures/_base.py is the specification.  The stdlib pays
 * for a threading.Condition, a deque and two lists per future; here a
 * pending future is a few pointers.  Blocked threads link a cf_waitnode
 * into the future and sleep on a cf_event; the stdlib's _condition and
 * _waiters are created only when stdlib code asks for them, and from then
 * on every state change happens under that condition, as in the stdlib. */
#include "cfutures.h"

#include <structmember.h>

/* How long result()/exception() poll before they sleep (see wait_done). */
#define CF_WAIT_SPIN_NS 30000

static const char *const state_descriptions[5] = {
    "pending", "running", "cancelled", "cancelled", "finished"};

/* ---- wait nodes ----------------------------------------------------- */

void
cf_future_link(cf_future *f, cf_waitnode *node, cf_notify_fn notify,
               void *owner)
{
    node->future = (PyObject *)f;
    node->notify = notify;
    node->owner = owner;
    node->prev = NULL;
    node->next = f->waiters;
    if (f->waiters != NULL) {
        f->waiters->prev = node;
    }
    f->waiters = node;
}

void
cf_future_unlink(cf_waitnode *node)
{
    cf_future *f = (cf_future *)node->future;
    if (f == NULL) {
        return;
    }
    if (node->prev != NULL) {
        node->prev->next = node->next;
    }
    else {
        f->waiters = node->next;
    }
    if (node->next != NULL) {
        node->next->prev = node->prev;
    }
    node->future = NULL;
    node->prev = node->next = NULL;
}

/* Tell the blocked waiters.  A final state detaches them all; a plain
 * cancel() leaves them linked, since wait() only counts a cancellation
 * once the executor has noticed it (CANCELLED_AND_NOTIFIED). */
static void
notify_waiters(cf_future *f, int kind)
{
    cf_waitnode *node = f->waiters;
    int final = kind != CF_EV_CANCELLED;
    if (final) {
        f->waiters = NULL;
    }
    while (node != NULL) {
        cf_waitnode *next = node->next;
        if (final) {
            node->future = NULL;
            node->prev = node->next = NULL;
        }
        node->notify(node, (PyObject *)f, kind);
        node = next;
    }
}

/* ---- the stdlib's _condition and _waiters, made on demand ----------- */

static PyObject *
ensure_compat(cf_future *f)
{
    if (f->compat != NULL) {
        return f->compat;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st == NULL) {
        return NULL;
    }
    PyObject *cond = PyObject_CallNoArgs(st->threading_Condition);
    if (cond == NULL) {
        return NULL;
    }
    PyObject *waiters = PyList_New(0);
    if (waiters == NULL) {
        Py_DECREF(cond);
        return NULL;
    }
    PyObject *compat = PyTuple_Pack(2, cond, waiters);
    Py_DECREF(cond);
    Py_DECREF(waiters);
    if (compat == NULL) {
        return NULL;
    }
    /* Making the Condition ran Python code: another thread may have won. */
    if (f->compat == NULL) {
        f->compat = compat;
    }
    else {
        Py_DECREF(compat);
    }
    return f->compat;
}

/* Acquire the stdlib condition if there is one; *cond gets a new ref. */
static int
compat_acquire(cf_future *f, PyObject **cond)
{
    *cond = NULL;
    if (f->compat == NULL) {
        return 0;
    }
    PyObject *c = Py_NewRef(PyTuple_GET_ITEM(f->compat, 0));
    PyObject *r = PyObject_CallMethod(c, "acquire", NULL);
    if (r == NULL) {
        Py_DECREF(c);
        return -1;
    }
    Py_DECREF(r);
    *cond = c;
    return 0;
}

/* Release what compat_acquire took, keeping any pending exception. */
static void
compat_release(PyObject *cond)
{
    if (cond == NULL) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallMethod(cond, "release", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable(cond);
    }
    Py_XDECREF(r);
    Py_DECREF(cond);
    PyErr_Restore(type, value, tb);
}

/* Under the condition: call method(self) on each stdlib waiter (as
 * _base.Future does), then notify_all if asked to. */
static int
compat_notify(cf_future *f, PyObject *cond, const char *method,
              int notify_all)
{
    if (cond == NULL) {
        return 0;
    }
    if (method != NULL) {
        PyObject *waiters = PySequence_List(PyTuple_GET_ITEM(f->compat, 1));
        if (waiters == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiters); i++) {
            PyObject *r = PyObject_CallMethod(PyList_GET_ITEM(waiters, i),
                                              method, "O", (PyObject *)f);
            if (r == NULL) {
                Py_DECREF(waiters);
                return -1;
            }
            Py_DECREF(r);
        }
        Py_DECREF(waiters);
    }
    if (notify_all) {
        PyObject *r = PyObject_CallMethod(cond, "notify_all", NULL);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* ---- callbacks ------------------------------------------------------ */

/* With an Exception set: log it on the concurrent.futures logger as
 * LOGGER.exception('exception calling callback for %r', future). */
static void
log_callback_error(cf_future *f)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *otype, *ovalue, *otb;
    PyErr_GetExcInfo(&otype, &ovalue, &otb);
    /* logger.exception() reads sys.exc_info(): make ours the handled one. */
    PyErr_SetExcInfo(type, value, tb);
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    PyObject *r = NULL;
    if (st != NULL) {
        r = PyObject_CallMethod(st->logger, "exception", "sO",
                                "exception calling callback for %r",
                                (PyObject *)f);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)f);
    }
    Py_XDECREF(r);
    PyErr_SetExcInfo(otype, ovalue, otb);
}

/* Call fn(future).  An Exception is logged; a BaseException that is not
 * one (KeyboardInterrupt, SystemExit) propagates, as in the stdlib. */
static int
call_callback(cf_future *f, PyObject *fn)
{
    PyObject *r = PyObject_CallOneArg(fn, (PyObject *)f);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    log_callback_error(f);
    return 0;
}

static int
invoke_callbacks(cf_future *f)
{
    PyObject *cbs;
    int is_list;
    /* Detached first: each callback runs exactly once, whoever races
     * (another completion path, remove_done_callback). */
    CF_BEGIN_CRITICAL(f)
    cbs = f->callbacks;
    is_list = f->cb_is_list;
    f->callbacks = NULL;
    f->cb_is_list = 0;
    CF_END_CRITICAL()
    if (cbs == NULL) {
        return 0;
    }
    int rc = 0;
    if (!is_list) {
        rc = call_callback(f, cbs);
    }
    else {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cbs); i++) {
            if (call_callback(f, PyList_GET_ITEM(cbs, i)) < 0) {
                rc = -1;
                break;
            }
        }
    }
    Py_DECREF(cbs);
    return rc;
}

int
cf_future_add_done_callback(cf_future *f, PyObject *fn)
{
    int rc = 1;
    CF_BEGIN_CRITICAL(f)
    if (!cf_future_is_done(f)) {
        rc = 0;
        if (f->callbacks == NULL) {
            f->callbacks = Py_NewRef(fn);
        }
        else if (!f->cb_is_list) {
            PyObject *list = PyList_New(2);
            if (list == NULL) {
                rc = -1;
            }
            else {
                PyList_SET_ITEM(list, 0, f->callbacks);
                PyList_SET_ITEM(list, 1, Py_NewRef(fn));
                f->callbacks = list;
                f->cb_is_list = 1;
            }
        }
        else if (PyList_Append(f->callbacks, fn) < 0) {
            rc = -1;
        }
    }
    CF_END_CRITICAL()
    /* Already done: call it now, in this thread, as the stdlib does. */
    return rc == 1 ? call_callback(f, fn) : rc;
}

/* ---- state changes -------------------------------------------------- */

static PyObject *
state_name(cf_future *f)
{
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    return st == NULL ? NULL : st->state_names[f->state];
}

static void
raise_invalid_state(cf_future *f)
{
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st == NULL) {
        return;
    }
    PyObject *msg = PyUnicode_FromFormat("%S: %R", st->state_names[f->state],
                                         (PyObject *)f);
    if (msg != NULL) {
        PyErr_SetObject(st->InvalidStateError, msg);
        Py_DECREF(msg);
    }
}

static int
complete(cf_future *f, PyObject *result, PyObject *exc)
{
    PyObject *cond;
    if (compat_acquire(f, &cond) < 0) {
        return -1;
    }
    int invalid = 0;
    CF_BEGIN_CRITICAL(f)
    if (f->state >= CF_CANCELLED) {
        invalid = 1;
    }
    else {
        Py_XSETREF(f->result, Py_XNewRef(result));
        Py_XSETREF(f->exception, Py_XNewRef(exc));
        f->state = CF_FINISHED;
        notify_waiters(f, CF_EV_FINISHED);
    }
    CF_END_CRITICAL()
    if (invalid) {
        raise_invalid_state(f);
        compat_release(cond);
        return -1;
    }
    int rc = compat_notify(f, cond, exc ? "add_exception" : "add_result", 1);
    compat_release(cond);
    /* A stdlib waiter that raised: the error propagates and, as in
     * _base.Future, the callbacks do not run (they must not run with an
     * exception set, which would be lost or turn into a SystemError). */
    if (rc < 0) {
        return -1;
    }
    return invoke_callbacks(f);
}

int
cf_future_set_result(cf_future *f, PyObject *result)
{
    return complete(f, result, NULL);
}

int
cf_future_set_exception(cf_future *f, PyObject *exc)
{
    /* set_exception(None) is allowed by the stdlib and stores None. */
    return complete(f, NULL, exc);
}

int
cf_future_cancel(cf_future *f)
{
    PyObject *cond;
    if (compat_acquire(f, &cond) < 0) {
        return -1;
    }
    int rc;
    CF_BEGIN_CRITICAL(f)
    if (f->state == CF_RUNNING || f->state == CF_FINISHED) {
        rc = 0;
    }
    else if (f->state != CF_PENDING) {
        rc = 1;
    }
    else {
        f->state = CF_CANCELLED;
        notify_waiters(f, CF_EV_CANCELLED);
        rc = 2;
    }
    CF_END_CRITICAL()
    if (rc != 2) {
        compat_release(cond);
        return rc;
    }
    int err = compat_notify(f, cond, NULL, 1);
    compat_release(cond);
    /* As in complete(): no callbacks with an exception set. */
    if (err < 0 || invoke_callbacks(f) < 0) {
        return -1;
    }
    return 1;
}

int
cf_future_set_running_or_notify_cancel(cf_future *f)
{
    PyObject *cond;
    if (compat_acquire(f, &cond) < 0) {
        return -1;
    }
    int rc;
    CF_BEGIN_CRITICAL(f)
    if (f->state == CF_PENDING) {
        f->state = CF_RUNNING;
        rc = 1;
    }
    else if (f->state == CF_CANCELLED) {
        f->state = CF_CANCELLED_AND_NOTIFIED;
        notify_waiters(f, CF_EV_CANCEL_NOTIFIED);
        rc = 0;
    }
    else {
        rc = -1;
    }
    CF_END_CRITICAL()
    if (rc == 0) {
        if (compat_notify(f, cond, "add_cancelled", 0) < 0) {
            rc = -1;
        }
        compat_release(cond);
        return rc;
    }
    compat_release(cond);
    if (rc == -1) {
        cf_state *st = cf_state_from_type(Py_TYPE(f));
        if (st == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallMethod(
            st->logger, "critical", "snO", "Future %s in unexpected state: %s",
            (Py_ssize_t)(uintptr_t)f, st->state_names[f->state]);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        PyErr_SetString(PyExc_RuntimeError, "Future in unexpected state");
    }
    return rc;
}

/* ---- reading the outcome -------------------------------------------- */

static PyObject *
raise_cancelled(cf_future *f)
{
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st != NULL) {
        PyErr_SetNone(st->CancelledError);
    }
    return NULL;
}

/* `raise self._exception`, with its traceback and context chaining. */
static void
raise_stored(PyObject *exc)
{
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else if (PyExceptionClass_Check(exc)) {
        PyErr_SetNone(exc);
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must derive from BaseException");
    }
}

/* The stdlib tests `if self._exception:`; an exception instance is true. */
static int
has_exception(cf_future *f)
{
    if (f->exception == NULL || f->exception == Py_None) {
        return 0;
    }
    if (PyExceptionInstance_Check(f->exception)) {
        return 1;
    }
    return PyObject_IsTrue(f->exception);
}

PyObject *
cf_future_get_result(cf_future *f)
{
    if (f->state == CF_CANCELLED || f->state == CF_CANCELLED_AND_NOTIFIED) {
        return raise_cancelled(f);
    }
    int has = has_exception(f);
    if (has < 0) {
        return NULL;
    }
    if (has) {
        raise_stored(f->exception);
        return NULL;
    }
    return Py_NewRef(f->result != NULL ? f->result : Py_None);
}

static void
wake_event(cf_waitnode *node, PyObject *future, int kind)
{
    cf_event_set((cf_event *)node->owner);
}

/* Block until done or timed out; 0 when it may be read, -1 on error. */
static int
wait_done(cf_future *f, PyObject *timeout)
{
    if (cf_future_is_done(f)) {
        return 0;
    }
    int64_t ns;
    if (cf_parse_timeout(timeout, &ns) < 0) {
        return -1;
    }
    if (ns == 0) {
        return 0;
    }
    /* The completer is often a microsecond away (an executor's
     * submit(fn).result()): poll briefly with the GIL released, yielding
     * the CPU, before paying for a lock, a futex sleep and a wakeup. */
    Py_INCREF(f);
    int64_t spin = ns < 0 || ns > CF_WAIT_SPIN_NS ? CF_WAIT_SPIN_NS : ns;
    int64_t t0 = cf_monotonic_ns(), spent;
    Py_BEGIN_ALLOW_THREADS
    while (cf_atomic_load_uchar(&f->state) < CF_CANCELLED
           && cf_monotonic_ns() - t0 < spin) {
        cf_yield();
    }
    Py_END_ALLOW_THREADS
    spent = cf_monotonic_ns() - t0;
    if (cf_future_is_done(f) || (ns > 0 && spent >= ns)) {
        Py_DECREF(f);
        return 0;
    }
    /* A signal that came while polling is not seen by the lock wait. */
    if (PyErr_CheckSignals() < 0) {
        Py_DECREF(f);
        return -1;
    }
    if (ns > 0) {
        ns -= spent;
    }
    cf_event ev;
    cf_waitnode node;
    if (cf_event_init(&ev) < 0) {
        Py_DECREF(f);
        return -1;
    }
    cf_future_link(f, &node, wake_event, &ev);
    int r = cf_event_wait(&ev, ns);
    cf_future_unlink(&node);
    cf_event_fini(&ev);
    Py_DECREF(f);
    return r < 0 ? -1 : 0;
}

static PyObject *
raise_timeout(cf_future *f)
{
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st != NULL) {
        PyErr_SetNone(st->TimeoutError);
    }
    return NULL;
}

/* ---- Python methods -------------------------------------------------- */

/* Parse (timeout=None) from a fastcall signature. */
static int
parse_timeout_arg(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames, PyObject **timeout)
{
    *timeout = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from 1 to 2 positional arguments but %zd "
                     "were given", fname, nargs + nkw + 1);
        return -1;
    }
    if (nargs == 1) {
        *timeout = args[0];
    }
    else if (nkw == 1) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, 0);
        if (!PyUnicode_Check(key)
            || PyUnicode_CompareWithASCIIString(key, "timeout") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%S'",
                         fname, key);
            return -1;
        }
        *timeout = args[0];
    }
    return 0;
}

static PyObject *
future_result(cf_future *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    PyObject *timeout;
    if (self->state == CF_FINISHED && self->exception == NULL && nargs == 0
        && kwnames == NULL) {
        /* The common case: a finished future read without a timeout. */
        return Py_NewRef(self->result != NULL ? self->result : Py_None);
    }
    if (parse_timeout_arg("result", args, nargs, kwnames, &timeout) < 0
        || wait_done(self, timeout) < 0) {
        return NULL;
    }
    if (!cf_future_is_done(self)) {
        return raise_timeout(self);
    }
    return cf_future_get_result(self);
}

static PyObject *
future_exception(cf_future *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    PyObject *timeout;
    if (parse_timeout_arg("exception", args, nargs, kwnames, &timeout) < 0
        || wait_done(self, timeout) < 0) {
        return NULL;
    }
    if (self->state == CF_CANCELLED
        || self->state == CF_CANCELLED_AND_NOTIFIED) {
        return raise_cancelled(self);
    }
    if (self->state != CF_FINISHED) {
        return raise_timeout(self);
    }
    return Py_NewRef(self->exception != NULL ? self->exception : Py_None);
}

static PyObject *
future_set_result(cf_future *self, PyObject *result)
{
    if (cf_future_set_result(self, result) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
future_set_exception(cf_future *self, PyObject *exc)
{
    if (cf_future_set_exception(self, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
future_cancel(cf_future *self, PyObject *unused)
{
    int r = cf_future_cancel(self);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
future_set_running_or_notify_cancel(cf_future *self, PyObject *unused)
{
    int r = cf_future_set_running_or_notify_cancel(self);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
future_add_done_callback(cf_future *self, PyObject *fn)
{
    /* asyncio's own callbacks that only hand the outcome to a loop go
     * through that loop's batch instead (asyncio_callbacks.c). */
    PyObject *adopted = NULL;
    if (PyFunction_Check(fn) && !cf_future_is_done(self)
        && cf_adopt_asyncio_callback(self, fn, &adopted) < 0) {
        return NULL;
    }
    int rc = cf_future_add_done_callback(self, adopted ? adopted : fn);
    Py_XDECREF(adopted);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Does the registered callback `entry` stand for fn? */
static int
callback_matches(cf_state *st, PyObject *entry, PyObject *fn)
{
    return PyObject_RichCompareBool(cf_aio_callback_target(st, entry), fn,
                                    Py_EQ);
}

/* remove_done_callback(fn): asyncio.Future's, an extension of the stdlib
 * concurrent Future (asyncio.wait needs it).  Removes every callback equal
 * to fn and returns how many.  Comparing runs Python code (__eq__), during
 * which the future may complete or callbacks be added or removed: so the
 * callbacks are compared on a snapshot, and the result is installed only
 * if they did not change meanwhile (else it starts over).  Appends keep a
 * list's prefix, and a removal always installs a new list, so "the same
 * object with the same length" means unchanged.  A completion detaches the
 * callbacks before running them: each is either removed or run, once. */
static PyObject *
future_remove_done_callback(cf_future *self, PyObject *fn)
{
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    for (;;) {
        PyObject *cbs;
        int is_list;
        Py_ssize_t n = 1;
        CF_BEGIN_CRITICAL(self)
        cbs = Py_XNewRef(self->callbacks);
        is_list = self->cb_is_list;
        if (cbs != NULL && is_list) {
            n = PyList_GET_SIZE(cbs);
        }
        CF_END_CRITICAL()
        if (cbs == NULL) {
            return PyLong_FromLong(0);
        }
        Py_ssize_t removed = 0;
        PyObject *keep = NULL;          /* what stays, if a list */
        if (!is_list) {
            int eq = callback_matches(st, cbs, fn);
            if (eq <= 0) {
                Py_DECREF(cbs);
                return eq < 0 ? NULL : PyLong_FromLong(0);
            }
            removed = 1;
        }
        else {
            PyObject *snap = PyList_GetSlice(cbs, 0, n);
            keep = snap ? PyList_New(0) : NULL;
            if (keep == NULL) {
                Py_XDECREF(snap);
                Py_DECREF(cbs);
                return NULL;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *entry = PyList_GET_ITEM(snap, i);
                int eq = callback_matches(st, entry, fn);
                if (eq < 0 || (!eq && PyList_Append(keep, entry) < 0)) {
                    Py_DECREF(keep);
                    Py_DECREF(snap);
                    Py_DECREF(cbs);
                    return NULL;
                }
                removed += eq;
            }
            Py_DECREF(snap);
            if (removed == 0) {
                Py_DECREF(keep);
                Py_DECREF(cbs);
                return PyLong_FromLong(0);
            }
        }
        PyObject *old = NULL;
        CF_BEGIN_CRITICAL(self)
        if (self->callbacks == cbs && self->cb_is_list == is_list
            && (!is_list || PyList_GET_SIZE(cbs) == n)) {
            old = self->callbacks;      /* the future's reference */
            if (keep != NULL && PyList_GET_SIZE(keep) > 0) {
                self->callbacks = keep;
                keep = NULL;
            }
            else {
                self->callbacks = NULL;
                self->cb_is_list = 0;
            }
        }
        CF_END_CRITICAL()
        /* Released outside the section: a callback's __del__ may run. */
        Py_XDECREF(keep);
        Py_DECREF(cbs);
        if (old != NULL) {
            Py_DECREF(old);
            return PyLong_FromSsize_t(removed);
        }
    }
}

static PyObject *
future_cancelled(cf_future *self, PyObject *unused)
{
    return PyBool_FromLong(self->state == CF_CANCELLED
                           || self->state == CF_CANCELLED_AND_NOTIFIED);
}

static PyObject *
future_running(cf_future *self, PyObject *unused)
{
    return PyBool_FromLong(self->state == CF_RUNNING);
}

static PyObject *
future_done(cf_future *self, PyObject *unused)
{
    return PyBool_FromLong(cf_future_is_done(self));
}

/* The stdlib's private helpers, so none of its methods runs on our object. */
static PyObject *
future_invoke_callbacks(cf_future *self, PyObject *unused)
{
    if (invoke_callbacks(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
future_get_result_private(cf_future *self, PyObject *unused)
{
    return cf_future_get_result(self);
}

static PyObject *
future_reduce_ex(cf_future *self, PyObject *unused)
{
    /* The stdlib future holds a lock and cannot be pickled either. */
    PyErr_Format(PyExc_TypeError, "cannot pickle '%s' object",
                 Py_TYPE(self)->tp_name);
    return NULL;
}

static PyObject *
future_repr(cf_future *self)
{
    PyObject *name = PyType_GetName(Py_TYPE(self));
    if (name == NULL) {
        return NULL;
    }
    const char *desc = state_descriptions[self->state];
    PyObject *r;
    if (self->state == CF_FINISHED) {
        int has = has_exception(self);
        if (has < 0) {
            Py_DECREF(name);
            return NULL;
        }
        PyObject *obj = has ? self->exception
                            : (self->result ? self->result : Py_None);
        PyObject *objname = PyType_GetName(Py_TYPE(obj));
        if (objname == NULL) {
            Py_DECREF(name);
            return NULL;
        }
        r = PyUnicode_FromFormat("<%U at %p state=%s %s %U>", name, self,
                                 desc, has ? "raised" : "returned", objname);
        Py_DECREF(objname);
    }
    else {
        r = PyUnicode_FromFormat("<%U at %p state=%s>", name, self, desc);
    }
    Py_DECREF(name);
    return r;
}

/* ---- attributes the stdlib's wait() and as_completed() read --------- */

static PyObject *
future_get_state(cf_future *self, void *closure)
{
    return Py_XNewRef(state_name(self));
}

static PyObject *
future_get_condition(cf_future *self, void *closure)
{
    PyObject *compat = ensure_compat(self);
    return compat ? Py_NewRef(PyTuple_GET_ITEM(compat, 0)) : NULL;
}

static PyObject *
future_get_waiters(cf_future *self, void *closure)
{
    PyObject *compat = ensure_compat(self);
    return compat ? Py_NewRef(PyTuple_GET_ITEM(compat, 1)) : NULL;
}

static PyObject *
future_get_result_attr(cf_future *self, void *closure)
{
    return Py_NewRef(self->result ? self->result : Py_None);
}

static PyObject *
future_get_exception_attr(cf_future *self, void *closure)
{
    return Py_NewRef(self->exception ? self->exception : Py_None);
}

/* ---- object protocol ------------------------------------------------ */

PyObject *
cf_future_new(cf_state *st)
{
    PyTypeObject *tp = st->public_future_type ? st->public_future_type
                                              : st->future_type;
    return tp->tp_alloc(tp, 0);
}

static PyObject *
future_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    /* Arguments are checked by __init__, so subclasses may take their own. */
    return type->tp_alloc(type, 0);
}

static int
future_init(cf_future *self, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyObject *key = NULL, *value;
        Py_ssize_t pos = 0;
        PyDict_Next(kwds, &pos, &key, &value);
        PyErr_Format(PyExc_TypeError,
                     "Future.__init__() got an unexpected keyword argument "
                     "'%S'", key);
        return -1;
    }
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_Format(PyExc_TypeError,
                     "Future.__init__() takes 1 positional argument but %zd "
                     "were given", PyTuple_GET_SIZE(args) + 1);
        return -1;
    }
    return 0;
}

static int
future_traverse(cf_future *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->result);
    Py_VISIT(self->exception);
    Py_VISIT(self->callbacks);
    Py_VISIT(self->compat);
    return 0;
}

static int
future_clear(cf_future *self)
{
    Py_CLEAR(self->result);
    Py_CLEAR(self->exception);
    Py_CLEAR(self->callbacks);
    self->cb_is_list = 0;
    Py_CLEAR(self->compat);
    return 0;
}

static void
future_dealloc(cf_future *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    /* A future whose result is a future whose result is ... would
     * otherwise recurse once per link and overflow the C stack.  (Python
     * subclasses get this from subtype_dealloc; the macro only acts when
     * this is the most derived tp_dealloc.) */
    Py_TRASHCAN_BEGIN(self, future_dealloc)
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* Waiters hold a reference, so none is left; be safe regardless. */
    while (self->waiters != NULL) {
        cf_future_unlink(self->waiters);
    }
    future_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
    Py_TRASHCAN_END
}

static PyMethodDef future_methods[] = {
    {"result", (PyCFunction)(void (*)(void))future_result,
     METH_FASTCALL | METH_KEYWORDS,
     "Return the result, waiting up to timeout seconds for it."},
    {"exception", (PyCFunction)(void (*)(void))future_exception,
     METH_FASTCALL | METH_KEYWORDS,
     "Return the exception raised by the call, waiting up to timeout "
     "seconds."},
    {"set_result", (PyCFunction)future_set_result, METH_O,
     "Set the result of the future and mark it finished."},
    {"set_exception", (PyCFunction)future_set_exception, METH_O,
     "Set the exception of the future and mark it finished."},
    {"cancel", (PyCFunction)future_cancel, METH_NOARGS,
     "Cancel the future if possible; True if it is cancelled."},
    {"cancelled", (PyCFunction)future_cancelled, METH_NOARGS,
     "True if the future was cancelled."},
    {"running", (PyCFunction)future_running, METH_NOARGS,
     "True if the future is running."},
    {"done", (PyCFunction)future_done, METH_NOARGS,
     "True if the future finished or was cancelled."},
    {"add_done_callback", (PyCFunction)future_add_done_callback, METH_O,
     "Call fn(future) when the future is done (now if it already is)."},
    {"remove_done_callback", (PyCFunction)future_remove_done_callback,
     METH_O,
     "Remove every done-callback equal to fn; return how many were "
     "removed.\n\nAn extension (asyncio.Future has it, "
     "concurrent.futures.Future does not); asyncio.wait uses it."},
    {"set_running_or_notify_cancel",
     (PyCFunction)future_set_running_or_notify_cancel, METH_NOARGS,
     "Mark the future running, or notify waiters that it was cancelled."},
    {"_invoke_callbacks", (PyCFunction)future_invoke_callbacks, METH_NOARGS,
     NULL},
    {"_Future__get_result", (PyCFunction)future_get_result_private,
     METH_NOARGS, NULL},
    {"__reduce_ex__", (PyCFunction)future_reduce_ex, METH_O, NULL},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "See PEP 585."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef future_getset[] = {
    {"_state", (getter)future_get_state, NULL, NULL, NULL},
    {"_condition", (getter)future_get_condition, NULL, NULL, NULL},
    {"_waiters", (getter)future_get_waiters, NULL, NULL, NULL},
    {"_result", (getter)future_get_result_attr, NULL, NULL, NULL},
    {"_exception", (getter)future_get_exception_attr, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef future_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(cf_future, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot future_slots[] = {
    {Py_tp_doc, "Represents the result of an asynchronous computation."},
    {Py_tp_new, future_new},
    {Py_tp_init, future_init},
    {Py_tp_dealloc, future_dealloc},
    {Py_tp_traverse, future_traverse},
    {Py_tp_clear, future_clear},
    {Py_tp_repr, future_repr},
    {Py_tp_methods, future_methods},
    {Py_tp_getset, future_getset},
    {Py_tp_members, future_members},
    {Py_am_await, cf_future_await},
    {0, NULL},
};

static PyType_Spec future_spec = {
    .name = "cfutures._cfutures.Future",
    .basicsize = sizeof(cf_future),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = future_slots,
};

int
cf_future_setup(PyObject *module, cf_state *st)
{
    st->future_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &future_spec, NULL);
    if (st->future_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->future_type);
}
