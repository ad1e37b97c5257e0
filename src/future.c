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

/* ---- the stdlib's _condition and _waiters, made on demand -----------
 *
 * f->compat is published once under f's critical section (and with a
 * release store, so a reader may first test it with an acquire load);
 * __init__ may drop it again.  So it is never borrowed: readers take a
 * new reference of the tuple, whose items then stay alive. */

/* The (Condition, waiters) pair, made on first use: a new reference. */
static PyObject *
ensure_compat(cf_future *f)
{
    PyObject *compat;
    CF_BEGIN_CRITICAL(f)
    compat = Py_XNewRef(f->compat);
    CF_END_CRITICAL()
    if (compat != NULL) {
        return compat;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st == NULL) {
        return NULL;
    }
    /* Made outside the section: making a Condition runs Python code. */
    PyObject *cond = PyObject_CallNoArgs(st->threading_Condition);
    if (cond == NULL) {
        return NULL;
    }
    PyObject *waiters = PyList_New(0);
    if (waiters == NULL) {
        Py_DECREF(cond);
        return NULL;
    }
    compat = PyTuple_Pack(2, cond, waiters);
    Py_DECREF(cond);
    Py_DECREF(waiters);
    if (compat == NULL) {
        return NULL;
    }
    /* Another thread may have published its pair meanwhile: every caller
     * must get the same one, so the first published wins. */
    PyObject *winner;
    CF_BEGIN_CRITICAL(f)
    if (f->compat == NULL) {
        cf_store_release(&f->compat, Py_NewRef(compat));
    }
    winner = Py_NewRef(f->compat);
    CF_END_CRITICAL()
    Py_DECREF(compat);      /* a loser's pair dies here, outside the section */
    return winner;
}

/* Acquire the stdlib condition if there is one: *compat gets a new ref of
 * the (Condition, waiters) pair whose Condition is now held, or NULL. */
static int
compat_acquire(cf_future *f, PyObject **compat)
{
    *compat = NULL;
    /* The common case, no stdlib code ever touched f: one load.  A pair
     * published right after it is caught by transition()'s check. */
    if (cf_load_acquire(&f->compat) == NULL) {
        return 0;
    }
    PyObject *c;
    CF_BEGIN_CRITICAL(f)
    c = Py_XNewRef(f->compat);
    CF_END_CRITICAL()
    if (c == NULL) {
        return 0;
    }
    PyObject *r = PyObject_CallMethod(PyTuple_GET_ITEM(c, 0), "acquire",
                                      NULL);
    if (r == NULL) {
        Py_DECREF(c);
        return -1;
    }
    Py_DECREF(r);
    *compat = c;
    return 0;
}

/* Release what compat_acquire took, keeping any pending exception. */
static void
compat_release(PyObject *compat)
{
    if (compat == NULL) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *cond = PyTuple_GET_ITEM(compat, 0);
    PyObject *r = PyObject_CallMethod(cond, "release", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable(cond);
    }
    Py_XDECREF(r);
    Py_DECREF(compat);
    PyErr_Restore(type, value, tb);
}

/* Under the condition: call method(self) on each stdlib waiter (as
 * _base.Future does), then notify_all if asked to. */
static int
compat_notify(cf_future *f, PyObject *compat, const char *method,
              int notify_all)
{
    if (compat == NULL) {
        return 0;
    }
    if (method != NULL) {
        PyObject *waiters = PySequence_List(PyTuple_GET_ITEM(compat, 1));
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
        PyObject *r = PyObject_CallMethod(PyTuple_GET_ITEM(compat, 0),
                                          "notify_all", NULL);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* A state change: step(f, arg) runs inside f's critical section, with
 * the stdlib's _condition held if f has one (*compat, for the caller to
 * notify under and release).  If stdlib code made f's _condition between
 * the two (another thread, without the GIL), a stdlib wait() may already
 * have checked the state under it, so the change must happen under it
 * too: start over.  Once the section has seen no _condition, one made
 * later is made after the change, and its makers see the new state.
 * step must not call into Python nor block; it returns >= 0. */
typedef int (*transition_fn)(cf_future *f, void *arg);

static inline int
transition(cf_future *f, transition_fn step, void *arg, PyObject **compat)
{
    for (;;) {
        if (compat_acquire(f, compat) < 0) {
            return -1;
        }
        int rc = 0, same;
        CF_BEGIN_CRITICAL(f)
        same = f->compat == *compat;
        if (same) {
            rc = step(f, arg);
        }
        CF_END_CRITICAL()
        if (same) {
            return rc;
        }
        compat_release(*compat);
    }
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

/* ---- chains of completions ------------------------------------------
 *
 * A callback that completes another future runs that future's callbacks
 * inside its own call, as in the stdlib.  There each link of such a chain
 * costs Python frames only (set_result, _invoke_callbacks, the callback),
 * which since 3.11 take no C stack, so a chain of 50,000 futures completes
 * under a high recursion limit; here each link costs C stack (completion,
 * the call, the callback's evaluation, set_result, completion ...), and
 * it overflowed.  So a thread runs at most CF_CALLBACK_NESTING callback
 * lists inside each other; the innermost of them (the "drain") runs the
 * callbacks of any future completed within it in a loop instead: after
 * the callback that completed that future returns, before the drain's
 * next one, depth first.  A chain that stays below that depth runs in the
 * stdlib's order exactly; past it only the code that follows a set_result
 * in the same callback runs before, not after, the completed future's
 * callbacks.
 *
 * The stdlib's chain ends in RecursionError when the recursion limit is
 * too low for it.  The drain keeps that: each future it takes over
 * carries the recursion depth its callbacks would have run at (`offset`
 * frames more than where the drain runs them), and a completion (like
 * the stdlib's set_result, entering a frame) raises RecursionError when
 * that depth passes the limit.  ~0.7 KiB of C stack per level on 3.11:
 * the nesting below takes well under a 512 KiB thread stack. */
#define CF_CALLBACK_NESTING 100

/* A future's detached callbacks, being run by the drain. */
typedef struct {
    cf_future *f;
    PyObject *cbs;              /* one callable, or a list (is_list) */
    Py_ssize_t next;            /* index of the next callback to run */
    int is_list;
    int offset;                 /* extra recursion depth, see above */
} cf_cblist;

typedef struct {
    cf_cblist *items;
    Py_ssize_t len;
    Py_ssize_t cap;
} cf_cbstack;

/* Per thread: the drain's state lives on the drain's own C stack frame,
 * so nothing outlives it. */
static CF_THREAD_LOCAL struct {
    int nesting;                /* callback lists running in this thread */
    int offset;                 /* extra depth of the callback running */
    int base_remaining;         /* cf_recursion_remaining() in the drain */
    cf_cbstack *deferred;       /* where completions in the drain go */
} cb_tls;

static int
cbstack_push(cf_cbstack *s, cf_cblist item)
{
    if (s->len == s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 16;
        cf_cblist *items = PyMem_Realloc(s->items, cap * sizeof(cf_cblist));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->items = items;
        s->cap = cap;
    }
    s->items[s->len++] = item;
    return 0;
}

static void
cbstack_free(cf_cbstack *s)
{
    for (Py_ssize_t i = 0; i < s->len; i++) {
        Py_DECREF(s->items[i].f);
        Py_DECREF(s->items[i].cbs);
    }
    PyMem_Free(s->items);
    s->items = NULL;
    s->len = s->cap = 0;
}

/* Before a state change that runs callbacks: RecursionError if this
 * completion, in the stdlib, would be nested deeper than the recursion
 * limit allows (only ever so in a drain). */
static int
check_chain_recursion(void)
{
    int offset = cb_tls.offset;
    if (offset > 0 && cf_recursion_remaining() < offset) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum recursion depth exceeded");
        return -1;
    }
    return 0;
}

/* The drain: run `first`'s callbacks and, depth first, those of every
 * future completed meanwhile in this thread.  Steals first's references. */
static int
drain_callbacks(cf_cblist first)
{
    cf_cbstack stack = {NULL, 0, 0}, deferred = {NULL, 0, 0};
    int saved_offset = cb_tls.offset;
    int saved_base = cb_tls.base_remaining;
    cf_cbstack *saved_deferred = cb_tls.deferred;
    int rc = 0;
    if (cbstack_push(&stack, first) < 0) {
        Py_DECREF(first.f);
        Py_DECREF(first.cbs);
        return -1;
    }
    cb_tls.deferred = &deferred;
    cb_tls.base_remaining = cf_recursion_remaining();
    while (stack.len > 0) {
        cf_cblist *top = &stack.items[stack.len - 1];
        Py_ssize_t n = top->is_list ? PyList_GET_SIZE(top->cbs) : 1;
        if (top->next >= n) {
            stack.len--;
            Py_DECREF(top->f);
            Py_DECREF(top->cbs);
            continue;
        }
        /* The list is detached: only this stack holds it. */
        PyObject *fn = top->is_list ? PyList_GET_ITEM(top->cbs, top->next)
                                    : top->cbs;
        cf_future *f = top->f;
        top->next++;
        cb_tls.offset = top->offset;
        Py_INCREF(fn);
        rc = call_callback(f, fn);      /* may grow (move) the stack */
        Py_DECREF(fn);
        if (rc < 0) {
            break;
        }
        /* What it completed runs next, the first one first. */
        for (Py_ssize_t i = deferred.len - 1; i >= 0; i--) {
            if (cbstack_push(&stack, deferred.items[i]) < 0) {
                rc = -1;
                break;
            }
            deferred.len--;
        }
        if (rc < 0) {
            break;
        }
    }
    cb_tls.deferred = saved_deferred;
    cb_tls.base_remaining = saved_base;
    cb_tls.offset = saved_offset;
    /* After an error (a KeyboardInterrupt out of a callback) the rest do
     * not run: in the stdlib it unwinds through their callers too. */
    cbstack_free(&deferred);
    cbstack_free(&stack);
    return rc;
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
    if (cb_tls.nesting >= CF_CALLBACK_NESTING
        && cb_tls.deferred != NULL) {
        /* Inside a drain: it runs them once the current callback returns. */
        cf_cblist item = {
            (cf_future *)Py_NewRef(f), cbs, 0, is_list,
            cb_tls.offset + cb_tls.base_remaining - cf_recursion_remaining(),
        };
        if (cbstack_push(cb_tls.deferred, item) < 0) {
            Py_DECREF(f);
            Py_DECREF(cbs);
            return -1;
        }
        return 0;
    }
    int rc = 0;
    cb_tls.nesting++;
    if (cb_tls.nesting >= CF_CALLBACK_NESTING) {
        cf_cblist item = {(cf_future *)Py_NewRef(f), cbs, 0, is_list, 0};
        rc = drain_callbacks(item);
    }
    else {
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
    }
    cb_tls.nesting--;
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

/* ---- state changes --------------------------------------------------
 *
 * Each checks and writes the state in one critical section (through
 * transition()), notifies the C waiters there, and does everything that
 * may run Python code (the stdlib waiters, notify_all, callbacks, the
 * release of a replaced outcome) after leaving it. */

static PyObject *
state_name(cf_future *f)
{
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    return st == NULL ? NULL : st->state_names[cf_future_state(f)];
}

static void
raise_invalid_state(cf_future *f, int state)
{
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st == NULL) {
        return;
    }
    PyObject *msg = PyUnicode_FromFormat("%S: %R", st->state_names[state],
                                         (PyObject *)f);
    if (msg != NULL) {
        PyErr_SetObject(st->InvalidStateError, msg);
        Py_DECREF(msg);
    }
}

typedef struct {
    PyObject *result, *exc;             /* the new outcome (borrowed) */
    PyObject *old_result, *old_exc;     /* what it replaced, to release */
    int state;                          /* the state found */
} complete_args;

/* 0 done, 1 already done (InvalidStateError). */
static int
complete_step(cf_future *f, void *arg)
{
    complete_args *a = arg;
    a->state = cf_future_state(f);
    if (a->state >= CF_CANCELLED) {
        return 1;
    }
    /* Not released here: a replaced (hand-written) outcome's __del__ may
     * run Python code. */
    a->old_result = f->result;
    a->old_exc = f->exception;
    f->result = Py_XNewRef(a->result);
    f->exception = Py_XNewRef(a->exc);
    cf_future_store_state(f, CF_FINISHED);     /* after the outcome */
    notify_waiters(f, CF_EV_FINISHED);
    return 0;
}

static int
complete(cf_future *f, PyObject *result, PyObject *exc)
{
    PyObject *compat;
    complete_args a = {result, exc, NULL, NULL, 0};
    if (check_chain_recursion() < 0) {
        return -1;
    }
    int invalid = transition(f, complete_step, &a, &compat);
    if (invalid < 0) {
        return -1;
    }
    if (invalid) {
        raise_invalid_state(f, a.state);
        compat_release(compat);
        return -1;
    }
    int rc = compat_notify(f, compat, exc ? "add_exception" : "add_result",
                           1);
    compat_release(compat);
    Py_XDECREF(a.old_result);
    Py_XDECREF(a.old_exc);
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

/* 0 running or finished, 1 already cancelled, 2 cancelled now. */
static int
cancel_step(cf_future *f, void *unused)
{
    int state = cf_future_state(f);
    if (state == CF_RUNNING || state == CF_FINISHED) {
        return 0;
    }
    if (state != CF_PENDING) {
        return 1;
    }
    cf_future_store_state(f, CF_CANCELLED);
    notify_waiters(f, CF_EV_CANCELLED);
    return 2;
}

int
cf_future_cancel(cf_future *f)
{
    PyObject *compat;
    if (check_chain_recursion() < 0) {
        return -1;
    }
    int rc = transition(f, cancel_step, NULL, &compat);
    if (rc < 0) {
        return -1;
    }
    if (rc != 2) {
        compat_release(compat);
        return rc;
    }
    int err = compat_notify(f, compat, NULL, 1);
    compat_release(compat);
    /* As in complete(): no callbacks with an exception set. */
    if (err < 0 || invoke_callbacks(f) < 0) {
        return -1;
    }
    return 1;
}

/* 1 now running, 0 cancellation notified, else 2 + the state found. */
static int
set_running_step(cf_future *f, void *unused)
{
    int state = cf_future_state(f);
    if (state == CF_PENDING) {
        cf_future_store_state(f, CF_RUNNING);
        return 1;
    }
    if (state == CF_CANCELLED) {
        cf_future_store_state(f, CF_CANCELLED_AND_NOTIFIED);
        notify_waiters(f, CF_EV_CANCEL_NOTIFIED);
        return 0;
    }
    return 2 + state;
}

int
cf_future_set_running_or_notify_cancel(cf_future *f)
{
    PyObject *compat;
    int rc = transition(f, set_running_step, NULL, &compat);
    if (rc < 0) {
        return -1;
    }
    if (rc == 0) {
        if (compat_notify(f, compat, "add_cancelled", 0) < 0) {
            rc = -1;
        }
        compat_release(compat);
        return rc;
    }
    compat_release(compat);
    if (rc >= 2) {
        cf_state *st = cf_state_from_type(Py_TYPE(f));
        if (st == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallMethod(
            st->logger, "critical", "snO", "Future %s in unexpected state: %s",
            (Py_ssize_t)(uintptr_t)f, st->state_names[rc - 2]);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        PyErr_SetString(PyExc_RuntimeError, "Future in unexpected state");
        return -1;
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

/* The stdlib tests `if self._exception:`; an exception instance is true.
 * Any other object's __bool__ runs here: never inside a critical section. */
static int
has_exception(PyObject *exc)
{
    if (exc == NULL || exc == Py_None) {
        return 0;
    }
    if (PyExceptionInstance_Check(exc)) {
        return 1;
    }
    return PyObject_IsTrue(exc);
}

/* result()'s answer from an outcome read by cf_future_outcome (whose
 * references it consumes). */
static PyObject *
result_from(cf_future *f, int state, PyObject *result, PyObject *exc)
{
    PyObject *r = NULL;
    if (state == CF_CANCELLED || state == CF_CANCELLED_AND_NOTIFIED) {
        raise_cancelled(f);
    }
    else {
        int has = has_exception(exc);
        if (has > 0) {
            raise_stored(exc);
        }
        else if (has == 0) {
            r = Py_NewRef(result != NULL ? result : Py_None);
        }
    }
    Py_XDECREF(result);
    Py_XDECREF(exc);
    return r;
}

PyObject *
cf_future_get_result(cf_future *f)
{
    PyObject *result, *exc;
    int state = cf_future_outcome(f, &result, &exc);
    return result_from(f, state, result, exc);
}

static void
wake_event(cf_waitnode *node, PyObject *future, int kind)
{
    cf_event_set((cf_event *)node->owner);
}

/* wait_done's poll condition: read without the GIL (an acquire load). */
static int
future_is_done(void *f)
{
    return cf_future_is_done((cf_future *)f);
}

/* Block until done or timed out; 0 when it may be read, -1 on error. */
static int
wait_done(cf_future *f, PyObject *timeout)
{
    if (cf_future_is_done(f)) {
        return 0;
    }
    int64_t ns;
    int done;
    if (cf_parse_timeout(timeout, &ns) < 0) {
        return -1;
    }
    if (ns == 0) {
        return 0;
    }
    /* The completer is often a microsecond away (an executor's
     * submit(fn).result()): poll briefly before paying for a lock, a
     * futex sleep and a wakeup. */
    Py_INCREF(f);
    int polled = cf_poll(future_is_done, f, &ns, CF_WAIT_SPIN_NS);
    if (polled != 0 || ns == 0) {
        Py_DECREF(f);
        return polled < 0 ? -1 : 0;
    }
    cf_event ev;
    cf_waitnode node;
    if (cf_event_init(&ev) < 0) {
        Py_DECREF(f);
        return -1;
    }
    /* Check and link in one critical section, where completions notify:
     * none can fall between them. */
    CF_BEGIN_CRITICAL(f)
    done = cf_future_is_done(f);
    if (!done) {
        cf_future_link(f, &node, wake_event, &ev);
    }
    CF_END_CRITICAL()
    int r = 0;
    if (!done) {
        r = cf_event_wait(&ev, ns);
        /* Unlinked in the section the notifier runs in: once out of it,
         * no notify is still setting ev (a no-op if the completion
         * detached the node already). */
        CF_BEGIN_CRITICAL(f)
        cf_future_unlink(&node);
        CF_END_CRITICAL()
    }
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

/* result()'s and exception()'s answer once the wait is over. */
static PyObject *
result_outcome(cf_future *self)
{
    PyObject *result, *exc;
    int state = cf_future_outcome(self, &result, &exc);
    if (state < CF_CANCELLED) {
        Py_XDECREF(result);
        Py_XDECREF(exc);
        return raise_timeout(self);
    }
    return result_from(self, state, result, exc);
}

static PyObject *
exception_outcome(cf_future *self)
{
    PyObject *result, *exc;
    int state = cf_future_outcome(self, &result, &exc);
    Py_XDECREF(result);
    if (state == CF_CANCELLED || state == CF_CANCELLED_AND_NOTIFIED) {
        Py_XDECREF(exc);
        return raise_cancelled(self);
    }
    if (state != CF_FINISHED) {
        Py_XDECREF(exc);
        return raise_timeout(self);
    }
    return exc != NULL ? exc : Py_NewRef(Py_None);
}

/* A future written to by hand is read under _condition, so a writer that
 * holds it has finished writing (see future_set_state). */
static PyObject *
read_outcome(cf_future *self, PyObject *(*outcome)(cf_future *))
{
    if (!cf_load_relaxed(&self->by_hand)) {
        return outcome(self);
    }
    PyObject *compat;
    if (compat_acquire(self, &compat) < 0) {
        return NULL;
    }
    PyObject *r = outcome(self);
    compat_release(compat);
    return r;
}

static PyObject *
future_result(cf_future *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    PyObject *timeout;
    if (nargs == 0 && kwnames == NULL
        && cf_future_state(self) == CF_FINISHED) {
        /* The common case: a finished future read without a timeout.  In
         * the section: `_result` may be being replaced. */
        PyObject *r = NULL;
        CF_BEGIN_CRITICAL(self)
        if (self->exception == NULL && !self->by_hand) {
            r = Py_NewRef(self->result != NULL ? self->result : Py_None);
        }
        CF_END_CRITICAL()
        if (r != NULL) {
            return r;
        }
    }
    if (parse_timeout_arg("result", args, nargs, kwnames, &timeout) < 0
        || wait_done(self, timeout) < 0) {
        return NULL;
    }
    return read_outcome(self, result_outcome);
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
    return read_outcome(self, exception_outcome);
}

/* The one argument of a method taking it positionally or by keyword, as
 * the stdlib's Python methods do (borrowed; NULL with a TypeError). */
static inline PyObject *
one_arg(const char *fname, const char *name, PyObject *const *args,
        Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 1 && kwnames == NULL) {
        return args[0];         /* the usual call: no binding */
    }
    PyObject *out;
    const char *names[1] = {name};
    return cf_bind_args(fname, names, 1, 1, 1, args, nargs, kwnames, &out)
           < 0 ? NULL : out;
}

static PyObject *
future_set_result(cf_future *self, PyObject *const *args, Py_ssize_t nargsf,
                  PyObject *kwnames)
{
    PyObject *result = one_arg("Future.set_result", "result", args,
                               PyVectorcall_NARGS(nargsf), kwnames);
    if (result == NULL || cf_future_set_result(self, result) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
future_set_exception(cf_future *self, PyObject *const *args,
                     Py_ssize_t nargsf, PyObject *kwnames)
{
    PyObject *exc = one_arg("Future.set_exception", "exception", args,
                            PyVectorcall_NARGS(nargsf), kwnames);
    if (exc == NULL || cf_future_set_exception(self, exc) < 0) {
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
future_add_done_callback(cf_future *self, PyObject *const *args,
                         Py_ssize_t nargsf, PyObject *kwnames)
{
    PyObject *fn = one_arg("Future.add_done_callback", "fn", args,
                           PyVectorcall_NARGS(nargsf), kwnames);
    if (fn == NULL) {
        return NULL;
    }
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
    int state = cf_future_state(self);
    return PyBool_FromLong(state == CF_CANCELLED
                           || state == CF_CANCELLED_AND_NOTIFIED);
}

static PyObject *
future_running(cf_future *self, PyObject *unused)
{
    return PyBool_FromLong(cf_future_state(self) == CF_RUNNING);
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
    PyObject *result, *exc, *r = NULL;
    int state = cf_future_outcome(self, &result, &exc);
    const char *desc = state_descriptions[state];
    if (state == CF_FINISHED) {
        int has = has_exception(exc);
        if (has >= 0) {
            PyObject *obj = has ? exc : (result ? result : Py_None);
            PyObject *objname = PyType_GetName(Py_TYPE(obj));
            if (objname != NULL) {
                r = PyUnicode_FromFormat("<%U at %p state=%s %s %U>", name,
                                         self, desc,
                                         has ? "raised" : "returned",
                                         objname);
                Py_DECREF(objname);
            }
        }
    }
    else {
        r = PyUnicode_FromFormat("<%U at %p state=%s>", name, self, desc);
    }
    Py_XDECREF(result);
    Py_XDECREF(exc);
    Py_DECREF(name);
    return r;
}

/* ---- attributes the stdlib's wait() and as_completed() read --------- */

static PyObject *
future_get_state(cf_future *self, void *closure)
{
    return Py_XNewRef(state_name(self));
}

/* _condition (0) or _waiters (1): a new reference. */
static PyObject *
compat_item(cf_future *self, Py_ssize_t i)
{
    PyObject *compat = ensure_compat(self);
    if (compat == NULL) {
        return NULL;
    }
    PyObject *item = Py_NewRef(PyTuple_GET_ITEM(compat, i));
    Py_DECREF(compat);
    return item;
}

static PyObject *
future_get_condition(cf_future *self, void *closure)
{
    return compat_item(self, 0);
}

static PyObject *
future_get_waiters(cf_future *self, void *closure)
{
    return compat_item(self, 1);
}

/* Read in the section, as new references: another thread may be
 * replacing them (and releasing the old). */
static PyObject *
future_get_result_attr(cf_future *self, void *closure)
{
    PyObject *result, *exc;
    (void)cf_future_outcome(self, &result, &exc);
    Py_XDECREF(exc);
    return result != NULL ? result : Py_NewRef(Py_None);
}

static PyObject *
future_get_exception_attr(cf_future *self, void *closure)
{
    PyObject *result, *exc;
    (void)cf_future_outcome(self, &result, &exc);
    Py_XDECREF(result);
    return exc != NULL ? exc : Py_NewRef(Py_None);
}

/* The stdlib's private protocol for completing a future by hand, which
 * CPython's tests and code written against _base.py use:
 *
 *     with f._condition:
 *         f._state = FINISHED
 *         f._result = value          # or f._exception = exc
 *         f._condition.notify_all()
 *
 * As in the stdlib, the writes take effect at once (a future set up this
 * way before anyone waits on it is simply done), threads blocked in
 * result() or exception() wake, and no done-callback runs (only
 * set_result() and friends run them).  A state write also wakes the C
 * waiters (result(), cfutures.wait(), as_completed()): a sleeper cannot
 * hear notify_all() on a Condition it never made.  Since the other
 * fields may still be being written, the future is marked by_hand and
 * its result()/exception() then read it under _condition, as the
 * stdlib's do, so they see the writer's last word; a future nobody
 * writes to pays nothing for this. */

static int
cf_state_from_name(cf_state *st, PyObject *value)
{
    for (int i = 0; i < 5; i++) {
        if (value == st->state_names[i]) {
            return i;
        }
    }
    for (int i = 0; i < 5; i++) {
        int eq = PyObject_RichCompareBool(value, st->state_names[i], Py_EQ);
        if (eq != 0) {
            return eq < 0 ? -1 : i;
        }
    }
    PyErr_Format(PyExc_ValueError, "%R is not a future state", value);
    return -1;
}

static int
future_set_state(cf_future *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete _state");
        return -1;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    int state = cf_state_from_name(st, value);
    if (state < 0) {
        return -1;
    }
    CF_BEGIN_CRITICAL(self)
    int old = cf_future_state(self);
    cf_store_relaxed(&self->by_hand, 1);
    cf_future_store_state(self, state);
    if (state != old && state >= CF_CANCELLED) {
        notify_waiters(self, state == CF_FINISHED ? CF_EV_FINISHED
                             : state == CF_CANCELLED ? CF_EV_CANCELLED
                             : CF_EV_CANCEL_NOTIFIED);
    }
    CF_END_CRITICAL()
    return 0;
}

/* _result and _exception: None is stored as NULL, as the C paths do. */
static int
set_outcome_field(cf_future *self, PyObject *value, PyObject **field,
                  const char *name)
{
    if (value == NULL) {
        PyErr_Format(PyExc_TypeError, "cannot delete %s", name);
        return -1;
    }
    PyObject *old;
    CF_BEGIN_CRITICAL(self)
    cf_store_relaxed(&self->by_hand, 1);
    old = *field;
    *field = value == Py_None ? NULL : Py_NewRef(value);
    CF_END_CRITICAL()
    Py_XDECREF(old);        /* outside the section: __del__ may run */
    return 0;
}

static int
future_set_result_attr(cf_future *self, PyObject *value, void *closure)
{
    return set_outcome_field(self, value, &self->result, "_result");
}

static int
future_set_exception_attr(cf_future *self, PyObject *value, void *closure)
{
    return set_outcome_field(self, value, &self->exception, "_exception");
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
    /* Called again on a used future: the stdlib's __init__ starts it over
     * (PENDING, no outcome, no callbacks, a new _condition and _waiters).
     * Blocked C waiters stay linked and hear its next completion; they
     * hold their own references, so nothing they use is freed here.  A
     * new future has nothing to reset. */
    PyObject *result = NULL, *exception = NULL, *callbacks = NULL;
    PyObject *compat = NULL;
    CF_BEGIN_CRITICAL(self)
    if (cf_future_state(self) != CF_PENDING || self->result != NULL
        || self->exception != NULL || self->callbacks != NULL
        || self->compat != NULL || self->by_hand) {
        result = self->result;
        exception = self->exception;
        callbacks = self->callbacks;
        compat = self->compat;
        self->result = self->exception = self->callbacks = NULL;
        cf_store_release(&self->compat, NULL);
        self->cb_is_list = 0;
        cf_store_relaxed(&self->by_hand, 0);
        cf_future_store_state(self, CF_PENDING);
    }
    CF_END_CRITICAL()
    /* Outside the section: a __del__ may run. */
    Py_XDECREF(result);
    Py_XDECREF(exception);
    Py_XDECREF(callbacks);
    Py_XDECREF(compat);
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

/* The docstrings start with a text signature ("name($self, ...)\n--\n\n"),
 * which gives inspect.signature() and help() the stdlib's signatures; a
 * METH_O parameter (remove_done_callback's, as asyncio's) is
 * positional-only, and its signature says so. */

PyDoc_STRVAR(future_result_doc,
"result($self, /, timeout=None)\n--\n\n"
"Return the result of the call that the future represents.\n\n"
"Args:\n"
"    timeout: The number of seconds to wait for the result if the future\n"
"        isn't done. If None, then there is no limit on the wait time.\n\n"
"Returns:\n"
"    The result of the call that the future represents.\n\n"
"Raises:\n"
"    CancelledError: If the future was cancelled.\n"
"    TimeoutError: If the future didn't finish executing before the given\n"
"        timeout.\n"
"    Exception: If the call raised then that exception will be raised.");

PyDoc_STRVAR(future_exception_doc,
"exception($self, /, timeout=None)\n--\n\n"
"Return the exception raised by the call that the future represents.\n\n"
"Args:\n"
"    timeout: The number of seconds to wait for the exception if the\n"
"        future isn't done. If None, then there is no limit on the wait\n"
"        time.\n\n"
"Returns:\n"
"    The exception raised by the call that the future represents or None\n"
"    if the call completed without raising.\n\n"
"Raises:\n"
"    CancelledError: If the future was cancelled.\n"
"    TimeoutError: If the future didn't finish executing before the given\n"
"        timeout.");

PyDoc_STRVAR(future_set_result_doc,
"set_result($self, /, result)\n--\n\n"
"Sets the return value of work associated with the future.\n\n"
"Wakes every thread and coroutine waiting for the future and runs its\n"
"done-callbacks.  Raises InvalidStateError if the future is already\n"
"finished or cancelled.\n\n"
"Should only be used by Executor implementations and unit tests.");

PyDoc_STRVAR(future_set_exception_doc,
"set_exception($self, /, exception)\n--\n\n"
"Sets the result of the future as being the given exception.\n\n"
"Wakes every thread and coroutine waiting for the future and runs its\n"
"done-callbacks.  Raises InvalidStateError if the future is already\n"
"finished or cancelled.\n\n"
"Should only be used by Executor implementations and unit tests.");

PyDoc_STRVAR(future_cancel_doc,
"cancel($self, /)\n--\n\n"
"Cancel the future if possible.\n\n"
"Returns True if the future was cancelled, False otherwise. A future\n"
"cannot be cancelled if it is running or has already completed.");

PyDoc_STRVAR(future_cancelled_doc,
"cancelled($self, /)\n--\n\n"
"Return True if the future was cancelled.");

PyDoc_STRVAR(future_running_doc,
"running($self, /)\n--\n\n"
"Return True if the future is currently executing.");

PyDoc_STRVAR(future_done_doc,
"done($self, /)\n--\n\n"
"Return True if the future was cancelled or finished executing.");

PyDoc_STRVAR(future_add_done_callback_doc,
"add_done_callback($self, /, fn)\n--\n\n"
"Attaches a callable that will be called when the future finishes.\n\n"
"Args:\n"
"    fn: A callable that will be called with this future as its only\n"
"        argument when the future completes or is cancelled. The callable\n"
"        will always be called by a thread in the same process in which\n"
"        it was added. If the future has already completed or been\n"
"        cancelled then the callable will be called immediately. These\n"
"        callables are called in the order that they were added.\n\n"
"asyncio's own callbacks (those of asyncio.wait and asyncio.wrap_future)\n"
"run on the event loop that added them instead; see the README.");

PyDoc_STRVAR(future_remove_done_callback_doc,
"remove_done_callback($self, fn, /)\n--\n\n"
"Remove all instances of a callback from the \"call when done\" list.\n\n"
"Returns the number of callbacks removed.  Each callback is either\n"
"removed or run, exactly once, even against a concurrent completion.\n\n"
"An extension: asyncio.Future has this method, concurrent.futures.Future\n"
"does not; asyncio.wait() uses it.");

PyDoc_STRVAR(future_set_running_or_notify_cancel_doc,
"set_running_or_notify_cancel($self, /)\n--\n\n"
"Mark the future as running or process any cancel notifications.\n\n"
"Should only be used by Executor implementations and unit tests.\n\n"
"If the future has been cancelled (cancel() was called and returned\n"
"True) then any threads waiting on the future completing (though calls\n"
"to as_completed() or wait()) are notified and False is returned.\n\n"
"If the future was not cancelled then it is put in the running state\n"
"(future calls to running() will return True) and True is returned.\n\n"
"This method should be called by Executor implementations before\n"
"executing the work associated with this future. If this method returns\n"
"False then the work should not be executed.\n\n"
"Returns:\n"
"    False if the Future was cancelled, True otherwise.\n\n"
"Raises:\n"
"    RuntimeError: if this method was already called or if set_result()\n"
"        or set_exception() was called.");

static PyMethodDef future_methods[] = {
    {"result", (PyCFunction)(void (*)(void))future_result,
     METH_FASTCALL | METH_KEYWORDS, future_result_doc},
    {"exception", (PyCFunction)(void (*)(void))future_exception,
     METH_FASTCALL | METH_KEYWORDS, future_exception_doc},
    {"set_result", (PyCFunction)(void (*)(void))future_set_result,
     METH_FASTCALL | METH_KEYWORDS,
     future_set_result_doc},
    {"set_exception", (PyCFunction)(void (*)(void))future_set_exception,
     METH_FASTCALL | METH_KEYWORDS,
     future_set_exception_doc},
    {"cancel", (PyCFunction)future_cancel, METH_NOARGS, future_cancel_doc},
    {"cancelled", (PyCFunction)future_cancelled, METH_NOARGS,
     future_cancelled_doc},
    {"running", (PyCFunction)future_running, METH_NOARGS,
     future_running_doc},
    {"done", (PyCFunction)future_done, METH_NOARGS, future_done_doc},
    {"add_done_callback",
     (PyCFunction)(void (*)(void))future_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS,
     future_add_done_callback_doc},
    {"remove_done_callback", (PyCFunction)future_remove_done_callback,
     METH_O, future_remove_done_callback_doc},
    {"set_running_or_notify_cancel",
     (PyCFunction)future_set_running_or_notify_cancel, METH_NOARGS,
     future_set_running_or_notify_cancel_doc},
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
    {"_state", (getter)future_get_state, (setter)future_set_state, NULL,
     NULL},
    {"_condition", (getter)future_get_condition, NULL, NULL, NULL},
    {"_waiters", (getter)future_get_waiters, NULL, NULL, NULL},
    {"_result", (getter)future_get_result_attr,
     (setter)future_set_result_attr, NULL, NULL},
    {"_exception", (getter)future_get_exception_attr,
     (setter)future_set_exception_attr, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef future_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(cf_future, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* The text signature gives inspect.signature(Future) the stdlib's "()". */
PyDoc_STRVAR(future_doc,
"Future()\n--\n\n"
"Represents the result of an asynchronous computation.\n\n"
"Awaitable in asyncio: `await future` in a coroutine on any running loop\n"
"waits without blocking the loop and returns the result (or raises).");

static PyType_Slot future_slots[] = {
    {Py_tp_doc, (void *)future_doc},
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
