/* The asyncio bridge: `await future`, batched loop wakeups, to_thread.
 *
 * docs/DESIGN.md, contract 5.  Awaiting a finished future returns at once and
 * never touches the loop.  A pending one is bridged to the awaiting loop:
 * when the cfutures future completes, its completing thread posts the
 * bridge into the loop's batch; the first post into an empty batch
 * schedules one loop.call_soon_threadsafe(batch), and the flush, on the
 * loop thread, completes every bridge of the burst.  asyncio.wrap_future
 * pays one call_soon_threadsafe (a self-pipe write and a loop wakeup) per
 * future and a chain of Python callbacks; here a burst costs one.
 *
 * The bridges are "loop-side futures": small C objects that speak the
 * protocol asyncio uses on futures it did not make (asyncio.isfuture,
 * get_loop, add_done_callback, result, cancel, ...), the way a Task waits
 * on any future-like object a coroutine yields.  So no asyncio.Future is
 * created per await, and a to_thread() call is its own future: gather,
 * shield, wait_for take it as it is, without wrapping it in a Task.
 *   - the awaiter, what cfutures.Future.__await__ returns: its outcome is
 *     the cfutures future's;
 *   - the to_thread call: also a coroutine (send, throw, close), so
 *     asyncio.create_task and TaskGroup.create_task accept it; its outcome
 *     is stored by the pool worker that ran it.
 * Loop-side state (done, callbacks) changes only on the loop thread, as
 * for an asyncio.Future; other threads only post.  Without the GIL (see
 * the README's "Concurrency model"): a batch's queue and `scheduled` are
 * guarded by the batch's critical section; lstate is read by posting
 * threads with a relaxed load (a stale PENDING only queues a node the
 * flush skips); a to_thread call's outcome is handed over through its
 * atomic `handoff` or the batch's critical section; the shared pool is
 * guarded by the module's lock.
 *
 * Batches are found through a per-thread cache (the thread state dict)
 * holding the batch of the loop last used in that thread: a loop runs in
 * one thread at a time, so this is one batch per loop in practice.
 */
#include "cfutures.h"

#include <structmember.h>

/* ---- the loop-side future: shared header ----------------------------- */

typedef struct cf_batch cf_batch;

enum { LS_PENDING, LS_DONE, LS_CANCELLED };
enum { NODE_AWAITER, NODE_CALL, NODE_LOOPCALL };

typedef struct cf_aionode {
    PyObject_HEAD
    vectorcallfunc vectorcall;    /* awaiter: the done-callback; call: run */
    PyObject *loop;               /* bound loop; NULL until bound */
    cf_batch *batch;              /* where completions are posted */
    struct cf_aionode *next;      /* link while queued in a batch */
    PyObject *cb0;                /* first done-callback and its context */
    PyObject *ctx0;
    PyObject *cbs;                /* more: a list of (fn, context) */
    PyObject *cancel_msg;
    unsigned char queued;         /* in a batch: under the batch's critical
                                     section (a node is posted once) */
    unsigned char lstate;         /* LS_*: changed on the loop thread only;
                                     atomic (node_lstate) */
    unsigned char blocking;       /* _asyncio_future_blocking */
    unsigned char kind;           /* NODE_* */
} cf_aionode;

struct cf_batch {
    PyObject_HEAD
    vectorcallfunc vectorcall;    /* the flush, run by the loop */
    PyObject *loop_ref;           /* weak reference to the loop, or the
                                     loop if it takes no weak references */
    unsigned long thread_id;      /* the thread the loop ran in */
    cf_aionode *head;             /* queued nodes, strong references */
    cf_aionode *tail;
    int scheduled;                /* a flush is on its way to the loop */
    /* head, tail, scheduled: the batch's critical section. */
    /* For the loop-side spin of to_thread calls (aiocall_spin), used on
     * the loop thread only, except calls_running: */
    PyObject *ready;              /* loop._ready (asyncio), or NULL */
    PyObject *self_reader;        /* the function of the loop's
                                     _read_from_self (asyncio's selector
                                     loops), or NULL */
    Py_ssize_t calls_running;     /* submitted calls not yet run; atomic
                                     (workers uncount theirs) */
    int spin_skip;                /* spins still to skip after a miss */
    int spin_backoff;             /* spins to skip after the next miss */
};

/* A node's loop-side state: written on the loop thread, read there and
 * (relaxed: a hint, checked again on the loop) by posting threads. */
static inline int
node_lstate(cf_aionode *n)
{
    return cf_load_relaxed(&n->lstate);
}

static inline void
node_set_lstate(cf_aionode *n, int v)
{
    cf_store_relaxed(&n->lstate, (unsigned char)v);
}

/* Import what the bridge needs from asyncio on first use, so importing
 * cfutures does not import asyncio.  Threads may race here: the first to
 * finish publishes (under st->lock, get_running_loop last with a release
 * store); the others drop theirs.  Readers that saw get_running_loop
 * (acquire) see the other two. */
static int
aio_import(cf_state *st)
{
    if (cf_load_acquire(&st->get_running_loop) != NULL) {
        return 0;
    }
    PyObject *events = PyImport_ImportModule("asyncio.events");
    if (events == NULL) {
        return -1;
    }
    PyObject *grl = PyObject_GetAttrString(events, "_get_running_loop");
    Py_DECREF(events);
    if (grl == NULL) {
        return -1;
    }
    PyObject *exc = PyImport_ImportModule("asyncio.exceptions");
    if (exc == NULL) {
        Py_DECREF(grl);
        return -1;
    }
    PyObject *ce = PyObject_GetAttrString(exc, "CancelledError");
    PyObject *ise = PyObject_GetAttrString(exc, "InvalidStateError");
    Py_DECREF(exc);
    if (ce == NULL || ise == NULL) {
        Py_XDECREF(ce);
        Py_XDECREF(ise);
        Py_DECREF(grl);
        return -1;
    }
    cf_mutex_lock(&st->lock);
    if (st->get_running_loop == NULL) {
        st->asyncio_CancelledError = ce;
        st->asyncio_InvalidStateError = ise;
        cf_store_release(&st->get_running_loop, grl);
        ce = ise = grl = NULL;
    }
    cf_mutex_unlock(&st->lock);
    Py_XDECREF(ce);
    Py_XDECREF(ise);
    Py_XDECREF(grl);
    return 0;
}

/* The running loop of this thread: new ref, or NULL (with RuntimeError
 * when `required`, else with no exception). */
static PyObject *
running_loop(cf_state *st, int required)
{
    if (aio_import(st) < 0) {
        return NULL;
    }
    PyObject *loop = PyObject_CallNoArgs(st->get_running_loop);
    if (loop == NULL) {
        return NULL;
    }
    if (loop == Py_None) {
        Py_DECREF(loop);
        if (required) {
            PyErr_SetString(PyExc_RuntimeError, "no running event loop");
        }
        return NULL;
    }
    return loop;
}

/* ---- the batch ------------------------------------------------------ */

/* Whether b is the batch of `loop` (a dead loop matches nothing). */
static int
batch_is_for(cf_batch *b, PyObject *loop)
{
    if (!PyWeakref_CheckRef(b->loop_ref)) {
        return b->loop_ref == loop;
    }
    PyObject *alive = cf_weakref_get(b->loop_ref);
    Py_XDECREF(alive);      /* only its identity is compared */
    return alive == loop;
}

static void node_complete(cf_state *st, cf_aionode *node);
static int node_complete_now(cf_state *st, cf_aionode *node);

/* Unlink every queued node (the caller owns their references and walks
 * their `next` links: nobody else writes those, a node being posted
 * once). */
static cf_aionode *
batch_take(cf_batch *b)
{
    cf_aionode *head;
    CF_BEGIN_CRITICAL(b)
    head = b->head;
    b->head = b->tail = NULL;
    b->scheduled = 0;
    for (cf_aionode *n = head; n != NULL; n = n->next) {
        n->queued = 0;
    }
    CF_END_CRITICAL()
    return head;
}

static void
release_nodes(cf_aionode *node)
{
    while (node != NULL) {
        cf_aionode *next = node->next;
        node->next = NULL;
        Py_DECREF(node);
        node = next;
    }
}

/* batch(): the flush, run on the loop thread by call_soon_threadsafe. */
static PyObject *
batch_flush(PyObject *self, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    cf_batch *b = (cf_batch *)self;
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    /* Taken first: completions posted while we run callbacks (which may
     * switch threads) schedule the next flush. */
    cf_aionode *node = batch_take(b);
    int failed = 0;
    while (node != NULL) {
        cf_aionode *next = node->next;
        node->next = NULL;
        if (!failed) {
            failed = node_complete_now(st, node) < 0;
        }
        else {
            /* A callback raised SystemExit or KeyboardInterrupt: it
             * propagates, as from a Handle; the rest run on later turns. */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            node_complete(st, node);
            PyErr_Restore(type, value, tb);
        }
        Py_DECREF(node);
        node = next;
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void batch_queue(cf_state *st, cf_aionode *node, PyObject *how);

/* Post a finished node to its loop, from any thread, GIL held.  Never
 * raises: it runs inside a future's done-callbacks or a pool worker. */
static void
batch_post(cf_aionode *node)
{
    cf_batch *b = node->batch;
    PyObject *loop = node->loop;
    if (b == NULL || loop == NULL || node_lstate(node) != LS_PENDING) {
        return;                   /* not bound, or cancelled already */
    }
    cf_state *st = PyType_GetModuleState(Py_TYPE(b));
    if (b->thread_id == PyThread_get_thread_ident()) {
        /* Finished on the loop's own thread while it runs there (e.g. by
         * another coroutine): complete now, no self-pipe write; the
         * callbacks still run on a later turn (call_soon). */
        PyObject *cur = PyObject_CallNoArgs(
            cf_load_acquire(&st->get_running_loop));
        if (cur == NULL) {
            PyErr_WriteUnraisable(NULL);
            return;
        }
        Py_DECREF(cur);
        if (cur == loop) {
            Py_INCREF(node);
            node_complete(st, node);
            Py_DECREF(node);
            return;
        }
    }
    batch_queue(st, node, st->str_call_soon_threadsafe);
}

/* Queue the node on its batch and, if no flush is on its way, schedule
 * one with loop.<how>(batch): call_soon_threadsafe from a worker,
 * call_soon on the loop's own thread (no self-pipe write: the loop runs
 * it on its next turn).  Never raises. */
static void
batch_queue(cf_state *st, cf_aionode *node, PyObject *how)
{
    cf_batch *b = node->batch;
    PyObject *loop = node->loop;
    int schedule;
    Py_INCREF(b);
    CF_BEGIN_CRITICAL(b)
    if (!node->queued) {
        node->queued = 1;
        Py_INCREF(node);
        if (b->tail == NULL) {
            b->head = node;
        }
        else {
            b->tail->next = node;
        }
        b->tail = node;
    }
    schedule = !b->scheduled;
    b->scheduled = 1;
    CF_END_CRITICAL()
    if (schedule) {
        /* One wakeup per burst: later posts see `scheduled` and only
         * queue.  The flush may even run before this call returns. */
        Py_INCREF(loop);
        PyObject *args[2] = {loop, (PyObject *)b};
        PyObject *r = PyObject_VectorcallMethod(
            how, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(loop);
        if (r == NULL && PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            /* The loop is closed, as wrap_future's callback may find it:
             * its awaiters cannot be woken, the cfutures futures complete
             * as usual; drop what was queued for this loop so nothing
             * leaks. */
            PyErr_Clear();
            release_nodes(batch_take(b));
        }
        else if (r == NULL) {
            /* Anything else (MemoryError, KeyboardInterrupt in the main
             * thread) leaves a loop that may still run: dropping the
             * burst would lose its wakeups.  Keep the nodes queued and
             * the batch unscheduled, so the next post retries. */
            PyErr_WriteUnraisable((PyObject *)b);
            CF_BEGIN_CRITICAL(b)
            b->scheduled = 0;
            CF_END_CRITICAL()
        }
        Py_XDECREF(r);
    }
    Py_DECREF(b);
}

static int
batch_traverse(cf_batch *b, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(b));
    Py_VISIT(b->loop_ref);
    Py_VISIT(b->ready);
    Py_VISIT(b->self_reader);
    for (cf_aionode *n = b->head; n != NULL; n = n->next) {
        Py_VISIT(n);
    }
    return 0;
}

static int
batch_clear(cf_batch *b)
{
    Py_CLEAR(b->loop_ref);
    Py_CLEAR(b->ready);
    Py_CLEAR(b->self_reader);
    release_nodes(batch_take(b));
    return 0;
}

/* The dealloc of every type here: run the finalizer if the type has one
 * (the to_thread call), then release the references through tp_clear. */
static void
aio_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (tp->tp_finalize != NULL
        && PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;                   /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    (void)tp->tp_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
batch_repr(cf_batch *b)
{
    int n = 0;
    CF_BEGIN_CRITICAL(b)
    for (cf_aionode *node = b->head; node != NULL; node = node->next) {
        n++;
    }
    CF_END_CRITICAL()
    return PyUnicode_FromFormat("<cfutures batch at %p queued=%d>", b, n);
}

static PyMemberDef batch_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(cf_batch, vectorcall),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot batch_slots[] = {
    {Py_tp_doc, "The wakeups of one event loop, delivered in one call."},
    {Py_tp_dealloc, aio_dealloc},
    {Py_tp_traverse, batch_traverse},
    {Py_tp_clear, batch_clear},
    {Py_tp_repr, batch_repr},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, batch_members},
    {0, NULL},
};

static PyType_Spec batch_spec = {
    .name = "cfutures._cfutures._Batch",
    .basicsize = sizeof(cf_batch),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = batch_slots,
};

/* The batch of `loop` (running in this thread), from the thread's cache,
 * made on first use.  Borrowed: the cache keeps it alive. */
static cf_batch *
get_batch(cf_state *st, PyObject *loop)
{
    PyObject *tdict = PyThreadState_GetDict();
    if (tdict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dict");
        return NULL;
    }
    PyObject *cached = PyDict_GetItemWithError(tdict, st->batch_key);
    if (cached != NULL && Py_IS_TYPE(cached, st->batch_type)
        && batch_is_for((cf_batch *)cached, loop)) {
        return (cf_batch *)cached;
    }
    if (cached == NULL && PyErr_Occurred()) {
        return NULL;
    }
    cf_batch *b = PyObject_GC_New(cf_batch, st->batch_type);
    if (b == NULL) {
        return NULL;
    }
    b->vectorcall = batch_flush;
    b->thread_id = PyThread_get_thread_ident();
    b->head = b->tail = NULL;
    b->scheduled = 0;
    b->ready = NULL;
    b->self_reader = NULL;
    b->calls_running = 0;
    b->spin_skip = b->spin_backoff = 0;
    /* Weak: the cache must not keep a finished loop alive.  Bound nodes
     * hold their loop, so it outlives their wakeups. */
    b->loop_ref = PyWeakref_NewRef(loop, NULL);
    if (b->loop_ref == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* A loop type without weak references: hold it (the thread's
         * cache then keeps its last loop until the next one). */
        PyErr_Clear();
        b->loop_ref = Py_NewRef(loop);
    }
    PyObject_GC_Track(b);
    if (b->loop_ref == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    /* asyncio's ready queue tells whether the loop has other work to do
     * right now; uvloop has none to read. */
    if (cf_getattr_optional(loop, st->str__ready, &b->ready) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    if (b->ready != NULL) {
        /* What drains its self-pipe (ready_only_self_reader). */
        PyObject *name = PyUnicode_FromString("_read_from_self");
        PyObject *m = NULL;
        if (name == NULL || cf_getattr_optional(loop, name, &m) < 0) {
            Py_XDECREF(name);
            Py_DECREF(b);
            return NULL;
        }
        Py_DECREF(name);
        if (m != NULL && PyMethod_Check(m)) {
            b->self_reader = Py_NewRef(PyMethod_GET_FUNCTION(m));
        }
        Py_XDECREF(m);
    }
    /* Replacing the previous loop's batch is safe: its bound nodes and a
     * scheduled flush hold it. */
    int rc = PyDict_SetItem(tdict, st->batch_key, (PyObject *)b);
    Py_DECREF(b);
    return rc < 0 ? NULL : b;
}

/* ---- the loop-side future protocol ---------------------------------- */

static void
node_init(cf_aionode *n, vectorcallfunc vc, int kind)
{
    n->vectorcall = vc;
    n->loop = NULL;
    n->batch = NULL;
    n->next = NULL;
    n->cb0 = n->ctx0 = n->cbs = NULL;
    n->cancel_msg = NULL;
    n->queued = 0;
    node_set_lstate(n, LS_PENDING);
    n->blocking = 0;
    n->kind = (unsigned char)kind;
}

/* Bind to `loop`, which runs in this thread. */
static int
node_bind(cf_state *st, cf_aionode *n, PyObject *loop)
{
    if (n->loop != NULL) {
        return 0;
    }
    cf_batch *b = get_batch(st, loop);
    if (b == NULL) {
        return -1;
    }
    n->loop = Py_NewRef(loop);
    n->batch = (cf_batch *)Py_NewRef(b);
    return 0;
}

static int
node_bind_running(cf_state *st, cf_aionode *n)
{
    if (n->loop != NULL) {
        return 0;
    }
    PyObject *loop = running_loop(st, 1);
    if (loop == NULL) {
        return -1;
    }
    int rc = node_bind(st, n, loop);
    Py_DECREF(loop);
    return rc;
}

/* loop.call_soon(fn, node, context=ctx) */
static int
schedule_callback(cf_state *st, cf_aionode *n, PyObject *fn, PyObject *ctx)
{
    PyObject *args[4] = {NULL, n->loop, fn, (PyObject *)n};
    PyObject *r;
    if (ctx != NULL && ctx != Py_None) {
        PyObject *a2[5] = {NULL, n->loop, fn, (PyObject *)n, ctx};
        r = PyObject_VectorcallMethod(st->str_call_soon, a2 + 1,
                                      3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      st->context_kwnames);
    }
    else {
        r = PyObject_VectorcallMethod(st->str_call_soon, args + 1,
                                      3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      NULL);
    }
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Schedule every done-callback, as asyncio.Future does on completion. */
static int
schedule_callbacks(cf_state *st, cf_aionode *n)
{
    PyObject *cb0 = n->cb0, *ctx0 = n->ctx0, *cbs = n->cbs;
    n->cb0 = n->ctx0 = n->cbs = NULL;
    int rc = 0;
    if (cb0 != NULL) {
        rc = schedule_callback(st, n, cb0, ctx0);
        Py_DECREF(cb0);
        Py_XDECREF(ctx0);
    }
    if (cbs != NULL) {
        for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(cbs); i++) {
            PyObject *t = PyList_GET_ITEM(cbs, i);
            rc = schedule_callback(st, n, PyTuple_GET_ITEM(t, 0),
                                   PyTuple_GET_ITEM(t, 1));
        }
        Py_DECREF(cbs);
    }
    return rc;
}

static int awaiter_source_cancelled(cf_aionode *n);
static void loopcall_complete(cf_state *st, cf_aionode *n);
static int loopcall_run(cf_state *st, cf_aionode *n);

/* On the loop thread: the node's outcome is ready; mark it done. */
static void
node_complete(cf_state *st, cf_aionode *n)
{
    if (node_lstate(n) != LS_PENDING) {
        return;                   /* cancelled by its awaiter meanwhile */
    }
    if (n->kind == NODE_LOOPCALL) {
        loopcall_complete(st, n);
        return;
    }
    /* As wrap_future: a cancelled cfutures future cancels the bridge. */
    node_set_lstate(n, awaiter_source_cancelled(n) ? LS_CANCELLED
                                                   : LS_DONE);
    if (schedule_callbacks(st, n) < 0) {
        PyErr_WriteUnraisable((PyObject *)n);
    }
}

static int report_callback_error(cf_aionode *n, PyObject *cb,
                                 PyObject *future);

/* Run one done-callback now, in its context, as a Handle would: an
 * Exception goes to the loop's exception handler; SystemExit and
 * KeyboardInterrupt propagate (-1). */
static int
run_callback_now(cf_state *st, cf_aionode *n, PyObject *cb, PyObject *ctx)
{
    if (ctx == NULL || ctx == Py_None || PyContext_Enter(ctx) < 0) {
        /* Its context is the running one (entered already): leave the
         * call to the loop. */
        PyErr_Clear();
        return schedule_callback(st, n, cb, ctx) < 0 ? -2 : 0;
    }
    PyObject *r = PyObject_CallOneArg(cb, (PyObject *)n);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyContext_Exit(ctx) < 0) {
        PyErr_WriteUnraisable(ctx);
    }
    PyErr_Restore(type, value, tb);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    return report_callback_error(n, cb, (PyObject *)n);
}

/* A done-callback `cb` of n raised: as a Handle, let SystemExit and
 * KeyboardInterrupt propagate (-1) and give anything else to the loop's
 * exception handler (0). */
static int
report_callback_error(cf_aionode *n, PyObject *cb, PyObject *future)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
        || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *context = Py_BuildValue(
        "{s:N,s:O}", "message",
        PyUnicode_FromFormat("Exception in callback %R", cb),
        "exception", value);
    if (context != NULL && future != NULL
        && PyDict_SetItemString(context, "future", future) < 0) {
        Py_CLEAR(context);
    }
    Py_DECREF(value);
    if (context != NULL) {
        PyObject *r = PyObject_CallMethod(n->loop, "call_exception_handler",
                                          "O", context);
        Py_DECREF(context);
        Py_XDECREF(r);
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable((PyObject *)n);
    }
    return 0;
}

/* In the flush, on the loop thread and outside any task: complete the
 * node and run its callbacks right away.  A Task waiting on it resumes
 * in this turn of the loop, not the next: one loop iteration less per
 * wakeup than asyncio.Future's call_soon.  -1 if a callback raised
 * SystemExit or KeyboardInterrupt (the other callbacks are scheduled). */
static int
node_complete_now(cf_state *st, cf_aionode *n)
{
    if (node_lstate(n) != LS_PENDING) {
        return 0;
    }
    if (n->kind == NODE_LOOPCALL) {
        return loopcall_run(st, n);
    }
    node_set_lstate(n, awaiter_source_cancelled(n) ? LS_CANCELLED
                                                   : LS_DONE);
    PyObject *cb0 = n->cb0, *ctx0 = n->ctx0, *cbs = n->cbs;
    n->cb0 = n->ctx0 = n->cbs = NULL;
    int rc = 0;
    if (cb0 != NULL) {
        rc = run_callback_now(st, n, cb0, ctx0);
        Py_DECREF(cb0);
        Py_XDECREF(ctx0);
    }
    if (cbs != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cbs); i++) {
            PyObject *t = PyList_GET_ITEM(cbs, i);
            if (rc == 0) {
                rc = run_callback_now(st, n, PyTuple_GET_ITEM(t, 0),
                                      PyTuple_GET_ITEM(t, 1));
            }
            else {
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                if (schedule_callback(st, n, PyTuple_GET_ITEM(t, 0),
                                      PyTuple_GET_ITEM(t, 1)) < 0) {
                    PyErr_WriteUnraisable((PyObject *)n);
                }
                PyErr_Restore(type, value, tb);
            }
        }
        Py_DECREF(cbs);
    }
    if (rc == -2) {
        PyErr_WriteUnraisable((PyObject *)n);
        rc = 0;
    }
    return rc;
}

static PyObject *
make_cancelled_error(cf_state *st, cf_aionode *n)
{
    if (aio_import(st) < 0) {
        return NULL;
    }
    if (n->cancel_msg == NULL || n->cancel_msg == Py_None) {
        return PyObject_CallNoArgs(st->asyncio_CancelledError);
    }
    return PyObject_CallOneArg(st->asyncio_CancelledError, n->cancel_msg);
}

static void
raise_cancelled(cf_state *st, cf_aionode *n)
{
    PyObject *e = make_cancelled_error(st, n);
    if (e != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
    }
}

static int
raise_invalid_state(cf_state *st, const char *msg)
{
    if (aio_import(st) == 0) {
        PyErr_SetString(st->asyncio_InvalidStateError, msg);
    }
    return -1;
}

/* The kind-specific parts, defined with each kind below. */
static PyObject *node_outcome(cf_aionode *n);            /* new ref or NULL */
static PyObject *node_exception(cf_aionode *n);          /* new ref or NULL */
static int node_cancel_source(cf_state *st, cf_aionode *n);

/* ---- protocol methods (shared by both kinds) ---- */

static PyObject *
node_get_loop(PyObject *self, PyObject *unused)
{
    cf_aionode *n = (cf_aionode *)self;
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (node_bind_running(st, n) < 0) {
        return NULL;
    }
    return Py_NewRef(n->loop);
}

static int node_start(cf_state *st, cf_aionode *n, int may_spin);
static int node_is_loop_future(cf_aionode *n);
static int loopfuture_first_cb(cf_state *st, cf_aionode *n);

/* add_done_callback(fn, *, context=None) */
static PyObject *
node_add_done_callback(PyObject *self, PyObject *const *args,
                       Py_ssize_t nargs, PyObject *kwnames)
{
    cf_aionode *n = (cf_aionode *)self;
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    PyObject *ctx = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 1 || nkw > 1) {
        PyErr_SetString(PyExc_TypeError,
                        "add_done_callback() takes exactly one positional "
                        "argument and an optional 'context'");
        return NULL;
    }
    if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                             "context") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "add_done_callback() got an unexpected keyword "
                         "argument '%S'", PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        ctx = args[1];
    }
    PyObject *fn = args[0];
    if (node_bind_running(st, n) < 0) {
        return NULL;
    }
    /* run_in_executor's result is registered on its future from the
     * start, so its completion is on its way through the batch, whose
     * flush runs this callback directly: no need to complete it here and
     * pay a loop.call_soon (a Handle) per callback, as gathering calls
     * that finished already would.  Its first callback, though, may be
     * where the loop would poll on a first await (loopfuture_first_cb). */
    if (node_is_loop_future(n)) {
        if (n->cb0 == NULL && n->cbs == NULL
            && loopfuture_first_cb(st, n) < 0) {
            return NULL;
        }
    }
    else if (node_start(st, n, 0) < 0) {
        return NULL;
    }
    if (node_lstate(n) != LS_PENDING) {
        if (schedule_callback(st, n, fn, ctx) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (ctx == NULL || ctx == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (ctx == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(ctx);
    }
    if (n->cb0 == NULL && n->cbs == NULL) {
        n->cb0 = Py_NewRef(fn);
        n->ctx0 = ctx;
        Py_RETURN_NONE;
    }
    PyObject *t = PyTuple_Pack(2, fn, ctx);
    Py_DECREF(ctx);
    if (t == NULL) {
        return NULL;
    }
    if (n->cbs == NULL && (n->cbs = PyList_New(0)) == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    int rc = PyList_Append(n->cbs, t);
    Py_DECREF(t);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
node_remove_done_callback(PyObject *self, PyObject *fn)
{
    cf_aionode *n = (cf_aionode *)self;
    Py_ssize_t removed = 0;
    if (n->cb0 != NULL) {
        int eq = PyObject_RichCompareBool(n->cb0, fn, Py_EQ);
        if (eq < 0) {
            return NULL;
        }
        if (eq) {
            Py_CLEAR(n->cb0);
            Py_CLEAR(n->ctx0);
            removed++;
        }
    }
    if (n->cbs != NULL) {
        PyObject *keep = PyList_New(0);
        if (keep == NULL) {
            return NULL;
        }
        PyObject *cbs = Py_NewRef(n->cbs);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cbs); i++) {
            PyObject *t = PyList_GET_ITEM(cbs, i);
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(t, 0), fn,
                                              Py_EQ);
            if (eq < 0 || (!eq && PyList_Append(keep, t) < 0)) {
                Py_DECREF(keep);
                Py_DECREF(cbs);
                return NULL;
            }
            removed += eq;
        }
        Py_DECREF(cbs);
        Py_XSETREF(n->cbs, keep);
    }
    return PyLong_FromSsize_t(removed);
}

static PyObject *
node_done(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(node_lstate((cf_aionode *)self) != LS_PENDING);
}

static PyObject *
node_cancelled(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(node_lstate((cf_aionode *)self) == LS_CANCELLED);
}

/* What result() and exception() check first, as asyncio.Future: 0 if
 * done, else -1 with CancelledError or InvalidStateError(not_set). */
static int
node_check_done(PyObject *self, const char *not_set)
{
    cf_aionode *n = (cf_aionode *)self;
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (node_lstate(n) == LS_CANCELLED) {
        raise_cancelled(st, n);
        return -1;
    }
    if (node_lstate(n) != LS_DONE) {
        raise_invalid_state(st, not_set);
        return -1;
    }
    return 0;
}

static PyObject *
node_result(PyObject *self, PyObject *unused)
{
    if (node_check_done(self, "Result is not set.") < 0) {
        return NULL;
    }
    return node_outcome((cf_aionode *)self);
}

static PyObject *
node_exception_meth(PyObject *self, PyObject *unused)
{
    if (node_check_done(self, "Exception is not set.") < 0) {
        return NULL;
    }
    return node_exception((cf_aionode *)self);
}

static int
node_cancel_impl(cf_state *st, cf_aionode *n, PyObject *msg)
{
    if (node_lstate(n) != LS_PENDING) {
        return 0;
    }
    node_set_lstate(n, LS_CANCELLED);
    Py_XSETREF(n->cancel_msg, Py_XNewRef(msg));
    /* As wrap_future: cancelling the bridge cancels what it waits for,
     * if that has not started. */
    if (node_cancel_source(st, n) < 0) {
        return -1;
    }
    if (n->loop != NULL && schedule_callbacks(st, n) < 0) {
        return -1;
    }
    return 1;
}

/* cancel(msg=None) */
static PyObject *
node_cancel(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *msg = Py_None;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError,
                        "cancel() takes at most 1 argument");
        return NULL;
    }
    if (nkw == 1 && PyUnicode_CompareWithASCIIString(
                        PyTuple_GET_ITEM(kwnames, 0), "msg") != 0) {
        PyErr_Format(PyExc_TypeError,
                     "cancel() got an unexpected keyword argument '%S'",
                     PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (nargs + nkw == 1) {
        msg = args[0];
    }
    int r = node_cancel_impl(st, (cf_aionode *)self, msg);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
node_make_cancelled_error(PyObject *self, PyObject *unused)
{
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    return make_cancelled_error(st, (cf_aionode *)self);
}

static int aiocall_unstarted(cf_aionode *n);

static PyObject *
node_get_blocking(PyObject *self, void *closure)
{
    cf_aionode *n = (cf_aionode *)self;
    if (n->kind == NODE_CALL && aiocall_unstarted(n)) {
        /* asyncio.isfuture() reads this before asyncio takes an object
         * as a future (ensure_future, gather, wait, shield, wait_for):
         * in a running loop the call becomes one now, so start it, as
         * ensure_future(asyncio.to_thread(f)) schedules its Task.
         * Outside a loop it is a coroutine: a Task's first step starts
         * it. */
        cf_state *st = PyType_GetModuleState(Py_TYPE(self));
        PyObject *loop = running_loop(st, 0);
        if (loop == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        int rc = node_bind(st, n, loop);
        Py_DECREF(loop);
        if (rc < 0 || node_start(st, n, 0) < 0) {
            return NULL;
        }
        return PyBool_FromLong(n->blocking);
    }
    if (n->loop != NULL) {
        return PyBool_FromLong(n->blocking);
    }
    /* Unbound, outside a running loop (asyncio.run(to_thread(f)), or
     * loop.run_until_complete): not a future yet, so asyncio takes it as
     * a coroutine and makes a Task, whose first step binds it. */
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    PyObject *loop = running_loop(st, 0);
    if (loop == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_DECREF(loop);
    Py_RETURN_FALSE;
}

static int
node_set_blocking(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    int b = PyObject_IsTrue(value);
    if (b < 0) {
        return -1;
    }
    ((cf_aionode *)self)->blocking = (unsigned char)b;
    return 0;
}

static PyObject *
node_get_cancel_message(PyObject *self, void *closure)
{
    cf_aionode *n = (cf_aionode *)self;
    return Py_NewRef(n->cancel_msg ? n->cancel_msg : Py_None);
}

static int
node_set_cancel_message(PyObject *self, PyObject *value, void *closure)
{
    Py_XSETREF(((cf_aionode *)self)->cancel_msg, Py_XNewRef(value));
    return 0;
}

static PyObject *
node_get_loop_attr(PyObject *self, void *closure)
{
    cf_aionode *n = (cf_aionode *)self;
    return Py_NewRef(n->loop ? n->loop : Py_None);
}

/* ---- coroutine side ---- */

/* Raise StopIteration(value) so that `yield from` / Task sees `value`. */
static void
set_stop_iteration(PyObject *value)
{
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return;
    }
    if (PyTuple_Check(value) || PyExceptionInstance_Check(value)) {
        /* These would be taken as the exception's args or instance. */
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, value);
        if (e != NULL) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
        return;
    }
    PyErr_SetObject(PyExc_StopIteration, value);
}

/* A StopIteration escaping an iterator would read as its return value,
 * and asyncio.Future refuses it (set_exception raises TypeError, so with
 * the stdlib's wrap_future the awaiter hangs): deliver it as a generator
 * does (PEP 479), a RuntimeError caused by it.  New ref. */
static PyObject *
convert_stop_iteration(PyObject *exc)
{
    if (!PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_StopIteration)
        && !PyObject_TypeCheck(exc,
                               (PyTypeObject *)PyExc_StopAsyncIteration)) {
        return Py_NewRef(exc);
    }
    PyObject *msg = PyUnicode_FromFormat("%s raised by the awaited call",
                                         Py_TYPE(exc)->tp_name);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(PyExc_RuntimeError, msg);
    Py_DECREF(msg);
    if (r == NULL) {
        return NULL;
    }
    PyException_SetCause(r, Py_NewRef(exc));
    PyException_SetContext(r, Py_NewRef(exc));
    return r;
}

/* Raise the stored exception `exc`, converted as above. */
static void
raise_stored_exception(PyObject *exc)
{
    PyObject *e = convert_stop_iteration(exc);
    if (e != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
    }
}

/* One step of `await node` (or of a Task running a to_thread call). */
static PySendResult
node_send_impl(cf_aionode *n, PyObject **presult)
{
    cf_state *st = PyType_GetModuleState(Py_TYPE(n));
    *presult = NULL;
    if (node_lstate(n) == LS_PENDING) {
        if (node_start(st, n, 1) < 0) {
            return PYGEN_ERROR;
        }
    }
    if (node_lstate(n) == LS_CANCELLED) {
        raise_cancelled(st, n);
        return PYGEN_ERROR;
    }
    if (node_lstate(n) == LS_PENDING) {
        /* What asyncio.Future.__await__ does: yield ourselves, marked, and
         * the Task adds its wakeup as our done-callback. */
        n->blocking = 1;
        *presult = Py_NewRef((PyObject *)n);
        return PYGEN_NEXT;
    }
    PyObject *r = node_outcome(n);
    if (r == NULL) {
        return PYGEN_ERROR;
    }
    *presult = r;
    return PYGEN_RETURN;
}

static PySendResult
node_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    return node_send_impl((cf_aionode *)self, presult);
}

static PyObject *
node_iternext(PyObject *self)
{
    PyObject *r;
    PySendResult s = node_send_impl((cf_aionode *)self, &r);
    if (s == PYGEN_RETURN) {
        if (r != Py_None) {
            set_stop_iteration(r);
        }
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* send(value): what a Task calls on its coroutine. */
static PyObject *
node_send(PyObject *self, PyObject *value)
{
    PyObject *r;
    PySendResult s = node_send_impl((cf_aionode *)self, &r);
    if (s == PYGEN_RETURN) {
        set_stop_iteration(r);
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* throw(typ[, val[, tb]]): raise what was thrown.  The Task throws in
 * the exception of the future it waited on (us), or CancelledError when
 * it is cancelled before it waits: then cancel, as asyncio.to_thread's
 * task would never have submitted the call. */
static PyObject *
node_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    cf_aionode *n = (cf_aionode *)self;
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "throw expected at least 1 argument, got %zd", nargs);
        return NULL;
    }
    PyObject *type = args[0];
    PyObject *val = nargs >= 2 ? args[1] : NULL;
    PyObject *tb = nargs == 3 ? args[2] : NULL;
    if (val == Py_None) {
        val = NULL;
    }
    if (tb == Py_None) {
        tb = NULL;
    }
    else if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError,
                        "throw() third argument must be a traceback");
        return NULL;
    }
    Py_INCREF(type);
    Py_XINCREF(val);
    Py_XINCREF(tb);
    if (PyExceptionClass_Check(type)) {
        PyErr_NormalizeException(&type, &val, &tb);
    }
    else if (PyExceptionInstance_Check(type)) {
        if (val != NULL) {
            PyErr_SetString(PyExc_TypeError,
                            "instance exception may not have a separate "
                            "value");
            goto fail;
        }
        val = type;
        type = Py_NewRef(PyExceptionInstance_Class(val));
        if (tb == NULL) {
            tb = PyException_GetTraceback(val);
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes deriving BaseException "
                        "or instances of such a class");
        goto fail;
    }
    if (node_lstate(n) == LS_PENDING && aio_import(st) == 0
        && PyObject_IsSubclass(type, st->asyncio_CancelledError) == 1) {
        if (node_cancel_impl(st, n, NULL) < 0) {
            PyErr_WriteUnraisable(self);
        }
    }
    PyErr_Restore(type, val, tb);
    return NULL;
fail:
    Py_DECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return NULL;
}

/* close(): a call that was never started will never run (as a
 * coroutine closed before its first step), and is not reported as never
 * awaited.  A started one keeps running, as asyncio.to_thread's thread
 * call does when its coroutine is closed. */
static PyObject *
node_close(PyObject *self, PyObject *unused)
{
    cf_aionode *n = (cf_aionode *)self;
    if (n->kind == NODE_CALL && aiocall_unstarted(n)) {
        cf_state *st = PyType_GetModuleState(Py_TYPE(self));
        if (node_cancel_impl(st, n, NULL) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
node_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int
node_traverse(cf_aionode *n, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(n));
    Py_VISIT(n->loop);
    Py_VISIT(n->batch);
    Py_VISIT(n->cb0);
    Py_VISIT(n->ctx0);
    Py_VISIT(n->cbs);
    Py_VISIT(n->cancel_msg);
    return 0;
}

static void
node_clear(cf_aionode *n)
{
    Py_CLEAR(n->loop);
    Py_CLEAR(n->batch);
    Py_CLEAR(n->cb0);
    Py_CLEAR(n->ctx0);
    Py_CLEAR(n->cbs);
    Py_CLEAR(n->cancel_msg);
}

/* asyncio's future protocol, as asyncio.Future's own methods document it;
 * the text signatures are asyncio.Future's. */
PyDoc_STRVAR(node_get_loop_doc,
"get_loop($self, /)\n--\n\nReturn the event loop the Future is bound to.");
PyDoc_STRVAR(node_add_done_callback_doc,
"add_done_callback($self, fn, /, *, context=None)\n--\n\n"
"Add a callback to be run when the future becomes done.\n\n"
"The callback is called with a single argument - the future object. If\n"
"the future is already done when this is called, the callback is\n"
"scheduled with call_soon.");
PyDoc_STRVAR(node_remove_done_callback_doc,
"remove_done_callback($self, fn, /)\n--\n\n"
"Remove all instances of a callback from the \"call when done\" list.\n\n"
"Returns the number of callbacks removed.");
PyDoc_STRVAR(node_done_doc,
"done($self, /)\n--\n\n"
"Return True if the future is done.\n\n"
"Done means either that a result / exception are available, or that the\n"
"future was cancelled.");
PyDoc_STRVAR(node_cancelled_doc,
"cancelled($self, /)\n--\n\nReturn True if the future was cancelled.");
PyDoc_STRVAR(node_result_doc,
"result($self, /)\n--\n\n"
"Return the result this future represents.\n\n"
"If the future has been cancelled, raises CancelledError.  If the\n"
"future's result isn't yet available, raises InvalidStateError.  If\n"
"the future is done and has an exception set, this exception is raised.");
PyDoc_STRVAR(node_exception_doc,
"exception($self, /)\n--\n\n"
"Return the exception that was set on this future.\n\n"
"The exception (or None if no exception was set) is returned only if\n"
"the future is done.  If the future has been cancelled, raises\n"
"CancelledError.  If the future isn't done yet, raises\n"
"InvalidStateError.");
PyDoc_STRVAR(node_cancel_doc,
"cancel($self, /, msg=None)\n--\n\n"
"Cancel the future and schedule callbacks.\n\n"
"If the future is already done or cancelled, return False.  Otherwise,\n"
"change the future's state to cancelled, schedule the callbacks and\n"
"return True.");
PyDoc_STRVAR(node_send_doc,
"send($self, value, /)\n--\n\n"
"send(arg) -> send 'arg' into coroutine,\n"
"return next iterated value or raise StopIteration.");
PyDoc_STRVAR(node_throw_doc,
"throw(typ[,val[,tb]]) -> raise exception in coroutine,\n"
"return next iterated value or raise StopIteration.");
PyDoc_STRVAR(node_close_doc,
"close($self, /)\n--\n\n"
"close() -> raise GeneratorExit inside coroutine.");

#define NODE_FUTURE_METHODS                                                \
    {"get_loop", node_get_loop, METH_NOARGS, node_get_loop_doc},           \
    {"add_done_callback", (PyCFunction)(void (*)(void))                    \
     node_add_done_callback, METH_FASTCALL | METH_KEYWORDS,                \
     node_add_done_callback_doc},                                          \
    {"remove_done_callback", node_remove_done_callback, METH_O,            \
     node_remove_done_callback_doc},                                       \
    {"done", node_done, METH_NOARGS, node_done_doc},                       \
    {"cancelled", node_cancelled, METH_NOARGS, node_cancelled_doc},        \
    {"result", node_result, METH_NOARGS, node_result_doc},                 \
    {"exception", node_exception_meth, METH_NOARGS, node_exception_doc},   \
    {"cancel", (PyCFunction)(void (*)(void))node_cancel,                   \
     METH_FASTCALL | METH_KEYWORDS, node_cancel_doc},                      \
    {"_make_cancelled_error", node_make_cancelled_error, METH_NOARGS,      \
     NULL},

/* A coroutine's methods too: what a Task drives.  Not on run_in_executor's
 * result, which, like asyncio.Future, is no coroutine (asyncio.wait()
 * refuses coroutines). */
#define NODE_METHODS                                                       \
    NODE_FUTURE_METHODS                                                    \
    {"send", node_send, METH_O, node_send_doc},                            \
    {"throw", (PyCFunction)(void (*)(void))node_throw, METH_FASTCALL,      \
     node_throw_doc},                                                      \
    {"close", node_close, METH_NOARGS, node_close_doc},

#define NODE_GETSET                                                        \
    {"_asyncio_future_blocking", node_get_blocking, node_set_blocking,     \
     NULL, NULL},                                                          \
    {"_cancel_message", node_get_cancel_message, node_set_cancel_message,  \
     NULL, NULL},                                                          \
    {"_loop", node_get_loop_attr, NULL, NULL, NULL},

#define NODE_MEMBERS                                                       \
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(cf_aionode, vectorcall), \
     READONLY, NULL},

/* ---- Future.__await__: the awaiter ---------------------------------- */

typedef struct {
    cf_aionode node;
    cf_future *future;
    unsigned char registered;     /* our done-callback is on the future */
    /* run_in_executor's result (cf_loop_future), only: */
    unsigned char executor;       /* it is one */
    unsigned char spun;           /* its first await polled already */
    unsigned char retrieved;      /* the exception was delivered or read */
    int counted;                  /* counted in batch->calls_running;
                                     atomic exchange: uncounted once */
    int handoff;                  /* HANDOFF_*: atomic (awaiter_spin) */
} cf_awaiter;

/* Who delivers a finished call to the loop: the worker through the batch
 * (NONE), or, while the loop thread polls for it (SPIN), the loop thread
 * itself once the worker marks it DONE. */
enum { HANDOFF_NONE, HANDOFF_SPIN, HANDOFF_DONE };

/* How long a loop thread with nothing else to do polls for the outcome of
 * the call it just submitted, before it yields to the loop: up to
 * CF_AIO_SPIN_START_NS for a worker to take the call (waking a sleeping
 * thread on a VM takes tens of microseconds), then CF_AIO_SPIN_NS for it
 * to finish. */
#define CF_AIO_SPIN_START_NS 200000
#define CF_AIO_SPIN_NS 30000
/* After a poll that missed, skip 1, 3, 7, ... up to this many polls. */
#define CF_AIO_SPIN_MAX_BACKOFF 63

static int spin_worthwhile(cf_batch *b, Py_ssize_t own);
static void spin_account(cf_batch *b, int done);

/* The loop thread's poll (awaiter_spin, aiocall_spin), with the GIL
 * released: until *handoff is HANDOFF_DONE, for CF_AIO_SPIN_START_NS
 * until started(arg) says a worker took the call, then CF_AIO_SPIN_NS
 * more.  1 if the outcome was handed over; otherwise the poll is
 * withdrawn (HANDOFF_SPIN -> NONE: the worker posts instead), unless the
 * worker handed it over just then, which the failed exchange tells. */
static int
handoff_poll(int *handoff, int (*started)(void *), void *arg)
{
    int64_t deadline = cf_monotonic_ns() + CF_AIO_SPIN_START_NS;
    int done, has_started = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        done = cf_load_acquire(handoff) == HANDOFF_DONE;
        if (done) {
            break;
        }
        int64_t now = cf_monotonic_ns();
        if (!has_started && started(arg)) {
            has_started = 1;
            deadline = now + CF_AIO_SPIN_NS;
        }
        if (now > deadline) {
            break;
        }
        cf_yield();
    }
    Py_END_ALLOW_THREADS
    if (!done) {
        int spinning = HANDOFF_SPIN;
        done = !cf_cas(handoff, &spinning, HANDOFF_NONE);
    }
    return done;
}

static int
node_is_loop_future(cf_aionode *n)
{
    return n->kind == NODE_AWAITER && ((cf_awaiter *)n)->executor;
}

static void
awaiter_uncount(cf_awaiter *aw)
{
    if (cf_exchange(&aw->counted, 0)) {
        cf_fetch_add(&aw->node.batch->calls_running, -1);
    }
}

static int aiocall_pool_cancelled(cf_aionode *n);

static int
awaiter_source_cancelled(cf_aionode *n)
{
    if (n->kind == NODE_CALL) {
        return aiocall_pool_cancelled(n);
    }
    if (n->kind != NODE_AWAITER) {
        return 0;
    }
    int state = cf_future_state(((cf_awaiter *)n)->future);
    return state == CF_CANCELLED || state == CF_CANCELLED_AND_NOTIFIED;
}

/* The future's outcome, as `await` delivers it. */
static PyObject *
awaiter_outcome(cf_awaiter *aw)
{
    cf_future *f = aw->future;
    PyObject *result, *exc;
    int state = cf_future_outcome(f, &result, &exc);
    if (state == CF_CANCELLED || state == CF_CANCELLED_AND_NOTIFIED) {
        /* As wrap_future: a cancelled future cancels the awaiter. */
        Py_XDECREF(result);
        Py_XDECREF(exc);
        cf_state *st = PyType_GetModuleState(Py_TYPE(aw));
        raise_cancelled(st, &aw->node);
        return NULL;
    }
    if (exc == NULL) {
        return result != NULL ? result : Py_NewRef(Py_None);
    }
    Py_XDECREF(result);
    aw->retrieved = 1;
    if (PyExceptionInstance_Check(exc)) {
        raise_stored_exception(exc);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(exc);
    return cf_future_get_result(f);
}

/* The done-callback of the awaiter and of a loop call: post the node.
 * run_in_executor's result is handed straight to a loop thread that
 * polls for it (awaiter_spin): no post, no wakeup. */
static PyObject *
post_callback(PyObject *self, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    cf_aionode *n = (cf_aionode *)self;
    if (n->kind == NODE_AWAITER && ((cf_awaiter *)n)->executor) {
        cf_awaiter *aw = (cf_awaiter *)n;
        /* Our own callback, first on a future nobody else sees: the call
         * has returned, this worker pops the queue next. */
        cf_worker_returning();
        awaiter_uncount(aw);
        int spinning = HANDOFF_SPIN;
        if (cf_cas(&aw->handoff, &spinning, HANDOFF_DONE)) {
            Py_RETURN_NONE;
        }
    }
    batch_post(n);
    Py_RETURN_NONE;
}

/* awaiter_spin's "a worker took it": the future left PENDING. */
static int
future_started(void *f)
{
    return cf_future_state((cf_future *)f) != CF_PENDING;
}

/* The first await of run_in_executor's result, by a Task about to yield
 * to a loop with nothing else to do: poll for the outcome with the GIL
 * released, as aiocall_spin does for a to_thread call.  The worker's
 * post_callback hands it over (HANDOFF_DONE) instead of posting.  1 if
 * the future is done.  Correct whatever the interleaving: after the
 * poll, a future that is done is completed here, and a post that was
 * made anyway finds the node done and is skipped. */
static int
awaiter_spin(cf_awaiter *aw)
{
    cf_future *f = aw->future;
    cf_store_release(&aw->handoff, HANDOFF_SPIN);
    int handed = handoff_poll(&aw->handoff, future_started, f);
    int done = handed || cf_future_is_done(f);
    spin_account(aw->node.batch, done);
    return done;
}

/* The first done-callback of run_in_executor's result, before any
 * await: asyncio.shield(), asyncio.wait() or a bare add_done_callback
 * (asgiref's sync_to_async shields every call).  There the Task awaits
 * another future and never polls ours, so each call would cost the
 * worker's post and the loop's selector wakeup.  Poll here instead, as
 * the first await does (awaiter_start) and under the same conditions
 * (on the loop's own thread, nothing else for it to do, the back-off
 * after misses).  A call the worker hands over in time is not completed
 * here: that would make done() turn true, and a remove_done_callback()
 * find nothing to remove, in the middle of synchronous code, which no
 * asyncio future does.  It is queued on the batch with call_soon
 * instead of the worker's call_soon_threadsafe: completed, its
 * callbacks run, on the loop's next turn, as asyncio's own completion
 * would be, minus the selector wakeup.  The poll is spent either way: a
 * later await does not poll again. */
static int
loopfuture_first_cb(cf_state *st, cf_aionode *n)
{
    cf_awaiter *aw = (cf_awaiter *)n;
    if (aw->spun || node_lstate(&aw->node) != LS_PENDING
        || cf_future_is_done(aw->future)) {
        return 0;
    }
    PyObject *loop = running_loop(st, 0);
    if (loop == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    int own = loop == aw->node.loop;
    Py_DECREF(loop);
    if (!own) {
        return 0;
    }
    aw->spun = 1;
    if (spin_worthwhile(aw->node.batch, 1) && awaiter_spin(aw)
        && cf_load_acquire(&aw->handoff) == HANDOFF_DONE) {
        /* Handed over: the worker posts nothing.  (A call that finished
         * without the handover is posted by its worker.) */
        batch_queue(st, n, st->str_call_soon);
    }
    return 0;
}

static int
awaiter_start(cf_state *st, cf_awaiter *aw, int may_spin)
{
    if (aw->executor && may_spin && !aw->spun
        && !cf_future_is_done(aw->future)) {
        aw->spun = 1;
        if (!spin_worthwhile(aw->node.batch, 1) || !awaiter_spin(aw)) {
            return 0;
        }
    }
    if (cf_future_is_done(aw->future)) {
        /* The fast path: a finished future never touches the loop.  (Any
         * callbacks, from a caller that did not wait for our wakeup, are
         * scheduled on the bound loop.) */
        node_complete(st, &aw->node);
        return 0;
    }
    if (aw->registered) {
        return 0;
    }
    if (node_bind_running(st, &aw->node) < 0) {
        return -1;
    }
    aw->registered = 1;
    /* The awaiter itself is the done-callback: nothing else to allocate.
     * If the future finished meanwhile, it posts right away. */
    if (cf_future_add_done_callback(aw->future, (PyObject *)aw) < 0) {
        aw->registered = 0;
        return -1;
    }
    return 0;
}

static int
awaiter_traverse(cf_awaiter *aw, visitproc visit, void *arg)
{
    Py_VISIT(aw->future);
    return node_traverse(&aw->node, visit, arg);
}

static int
awaiter_clear(cf_awaiter *aw)
{
    if (aw->node.batch != NULL) {
        awaiter_uncount(aw);
    }
    node_clear(&aw->node);
    Py_CLEAR(aw->future);
    return 0;
}

static PyObject *
awaiter_repr(cf_awaiter *aw)
{
    static const char *names[] = {"pending", "finished", "cancelled"};
    return PyUnicode_FromFormat("<cfutures awaiter %s of %R>",
                                names[node_lstate(&aw->node)],
                                (PyObject *)aw->future);
}

PyObject *
cf_future_await(PyObject *self)
{
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    cf_awaiter *aw = PyObject_GC_New(cf_awaiter, st->awaiter_type);
    if (aw == NULL) {
        return NULL;
    }
    node_init(&aw->node, post_callback, NODE_AWAITER);
    aw->future = (cf_future *)Py_NewRef(self);
    aw->registered = 0;
    aw->executor = aw->spun = aw->retrieved = 0;
    aw->counted = 0;
    aw->handoff = HANDOFF_NONE;
    PyObject_GC_Track(aw);
    return (PyObject *)aw;
}

static PyMethodDef awaiter_methods[] = {
    NODE_METHODS
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef awaiter_getset[] = {
    NODE_GETSET
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef awaiter_members[] = {
    NODE_MEMBERS
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot awaiter_slots[] = {
    {Py_tp_doc, "What Future.__await__ returns: the future's stand-in on "
                "the awaiting loop."},
    {Py_tp_dealloc, aio_dealloc},
    {Py_tp_traverse, awaiter_traverse},
    {Py_tp_clear, awaiter_clear},
    {Py_tp_repr, awaiter_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, node_iternext},
    {Py_am_await, node_await},
    {Py_am_send, node_am_send},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, awaiter_methods},
    {Py_tp_getset, awaiter_getset},
    {Py_tp_members, awaiter_members},
    {0, NULL},
};

static PyType_Spec awaiter_spec = {
    .name = "cfutures._cfutures._FutureAwaiter",
    .basicsize = sizeof(cf_awaiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = awaiter_slots,
};

/* ---- run_in_executor's result under cfutures.install() --------------- */

/* What asyncio.wrap_future(pool.submit(fn, *args)) gives, for a cfutures
 * pool: an awaiter bound to `loop` at once, as asyncio.Future is, without
 * the coroutine methods (asyncio.wait() refuses coroutines).  Its
 * outcome is the future's; cancelling it cancels the future, as
 * wrap_future does; the completing worker posts it to the loop's batch,
 * or hands it to the loop thread polling for it on its first await. */

/* As asyncio.Future: an exception nobody retrieved goes to the loop's
 * exception handler when the future is collected. */
static void
loopfuture_finalize(PyObject *self)
{
    cf_awaiter *aw = (cf_awaiter *)self;
    if (aw->retrieved || aw->node.loop == NULL
        || node_lstate(&aw->node) != LS_DONE) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *result, *exc;
    (void)cf_future_outcome(aw->future, &result, &exc);
    Py_XDECREF(result);
    if (exc != NULL && PyExceptionInstance_Check(exc)) {
        PyObject *context = Py_BuildValue(
            "{s:s,s:O,s:O}", "message",
            "Future exception was never retrieved",
            "exception", exc, "future", self);
        if (context != NULL) {
            PyObject *r = PyObject_CallMethod(aw->node.loop,
                                              "call_exception_handler",
                                              "O", context);
            Py_DECREF(context);
            Py_XDECREF(r);
        }
        if (PyErr_Occurred()) {
            PyErr_WriteUnraisable(self);
        }
    }
    Py_XDECREF(exc);
    PyErr_Restore(type, value, tb);
}

static PyObject *
loopfuture_repr(cf_awaiter *aw)
{
    static const char *names[] = {"pending", "finished", "cancelled"};
    return PyUnicode_FromFormat("<cfutures loop future %s of %R>",
                                names[node_lstate(&aw->node)],
                                (PyObject *)aw->future);
}

static PyMethodDef loopfuture_methods[] = {
    NODE_FUTURE_METHODS
    {NULL, NULL, 0, NULL},
};

static PyType_Slot loopfuture_slots[] = {
    {Py_tp_doc, "loop.run_in_executor()'s result with cfutures.install(): "
                "an asyncio-compatible future of a cfutures pool's call."},
    {Py_tp_dealloc, aio_dealloc},
    {Py_tp_finalize, loopfuture_finalize},
    {Py_tp_traverse, awaiter_traverse},
    {Py_tp_clear, awaiter_clear},
    {Py_tp_repr, loopfuture_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, node_iternext},
    {Py_am_await, node_await},
    {Py_am_send, node_am_send},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, loopfuture_methods},
    {Py_tp_getset, awaiter_getset},
    {Py_tp_members, awaiter_members},
    {0, NULL},
};

static PyType_Spec loopfuture_spec = {
    .name = "cfutures._cfutures._LoopFuture",
    .basicsize = sizeof(cf_awaiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = loopfuture_slots,
};

/* _loop_future(loop, future, done_at_once): `future` (what
 * executor.submit returned) as an asyncio future of `loop`, or None if it
 * is not a cfutures future (the caller then uses asyncio.wrap_future).
 * `done_at_once`: whether this interpreter's wrap_future completes its
 * future at once when the call finished before it was wrapped (3.13's
 * does, on the loop's thread; 3.11's completes it on a later turn). */
static PyObject *
loop_future(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cf_state *st = cf_get_state(module);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_loop_future() takes exactly 3 arguments");
        return NULL;
    }
    PyObject *loop = args[0], *fut = args[1];
    if (!cf_future_check(st, fut)) {
        Py_RETURN_NONE;
    }
    int done_at_once = PyObject_IsTrue(args[2]);
    if (done_at_once < 0) {
        return NULL;
    }
    cf_awaiter *aw = PyObject_GC_New(cf_awaiter, st->loopfuture_type);
    if (aw == NULL) {
        return NULL;
    }
    node_init(&aw->node, post_callback, NODE_AWAITER);
    aw->future = (cf_future *)Py_NewRef(fut);
    aw->registered = 0;
    aw->executor = 1;
    aw->spun = aw->retrieved = 0;
    aw->counted = 0;
    aw->handoff = HANDOFF_NONE;
    PyObject_GC_Track(aw);
    if (aio_import(st) < 0 || node_bind(st, &aw->node, loop) < 0) {
        Py_DECREF(aw);
        return NULL;
    }
    /* Counted while in flight: a loop with calls of ours in flight does
     * not poll for another (spin_worthwhile). */
    cf_store_relaxed(&aw->counted, 1);
    cf_fetch_add(&aw->node.batch->calls_running, 1);
    aw->registered = 1;
    /* The call may have finished already (a pool's first submit waits for
     * its new worker to start, and that worker may run it meanwhile):
     * then our callback runs right here, on the loop's thread, where
     * batch_post completes the future at once, as 3.13's wrap_future
     * does.  Where wrap_future's future completes on a later turn
     * instead, registered as if polling, such a call is handed over and
     * delivered on the loop's next turn (call_soon). */
    cf_store_relaxed(&aw->handoff, done_at_once ? HANDOFF_NONE
                                                : HANDOFF_SPIN);
    if (cf_future_add_done_callback(aw->future, (PyObject *)aw) < 0) {
        aw->registered = 0;
        awaiter_uncount(aw);
        Py_DECREF(aw);
        return NULL;
    }
    int registering = HANDOFF_SPIN;
    if (!done_at_once
        && !cf_cas(&aw->handoff, &registering, HANDOFF_NONE)) {
        aw->spun = 1;           /* nothing left to poll for */
        batch_queue(st, &aw->node, st->str_call_soon);
    }
    return (PyObject *)aw;
}

/* ---- loop calls ----------------------------------------------------- */

/* A done-callback for a cfutures future that runs fn(*args) on a loop,
 * posted through the loop's batch: what asyncio's own callbacks that
 * only hand the outcome to a loop become (asyncio_callbacks.c). */
typedef struct {
    cf_aionode node;
    PyObject *fn;
    PyObject *args;           /* a tuple; both NULL once run */
    PyObject *origin;         /* the callback it replaces, for
                                 remove_done_callback */
    int inline_on_loop;       /* finished on the loop's own thread: run
                                 now rather than call_soon */
} cf_loopcall;

/* In the flush: run it now, as its Handle would have run. */
static int
loopcall_run(cf_state *st, cf_aionode *n)
{
    cf_loopcall *lc = (cf_loopcall *)n;
    node_set_lstate(n, LS_DONE);
    PyObject *fn = lc->fn, *args = lc->args;
    lc->fn = lc->args = NULL;
    PyObject *r = PyObject_Call(fn, args, NULL);
    int rc = 0;
    if (r == NULL) {
        rc = report_callback_error(n, fn, NULL);
    }
    Py_XDECREF(r);
    Py_DECREF(fn);
    Py_DECREF(args);
    return rc;
}

/* Finished on the loop's own thread, or deferred by a flush that raised:
 * loop.call_soon(fn, *args) (or run it now, if its origin ran it now on
 * the loop's thread). */
static void
loopcall_schedule(cf_state *st, cf_aionode *n)
{
    cf_loopcall *lc = (cf_loopcall *)n;
    node_set_lstate(n, LS_DONE);
    PyObject *fn = lc->fn, *args = lc->args;
    lc->fn = lc->args = NULL;
    PyObject *r = NULL;
    PyObject *callargs = PyTuple_New(PyTuple_GET_SIZE(args) + 1);
    if (callargs != NULL) {
        PyTuple_SET_ITEM(callargs, 0, fn);
        fn = NULL;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
            PyTuple_SET_ITEM(callargs, i + 1,
                             Py_NewRef(PyTuple_GET_ITEM(args, i)));
        }
        PyObject *call_soon = PyObject_GetAttr(n->loop, st->str_call_soon);
        if (call_soon != NULL) {
            r = PyObject_Call(call_soon, callargs, NULL);
            Py_DECREF(call_soon);
        }
        Py_DECREF(callargs);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)n);
    }
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_DECREF(args);
}

/* Finished on the loop's own thread while it runs. */
static void
loopcall_complete(cf_state *st, cf_aionode *n)
{
    if (!((cf_loopcall *)n)->inline_on_loop) {
        loopcall_schedule(st, n);
    }
    else if (loopcall_run(st, n) < 0) {
        PyErr_WriteUnraisable((PyObject *)n);
    }
}

static int
loopcall_traverse(cf_loopcall *lc, visitproc visit, void *arg)
{
    Py_VISIT(lc->fn);
    Py_VISIT(lc->args);
    Py_VISIT(lc->origin);
    return node_traverse(&lc->node, visit, arg);
}

static int
loopcall_clear(cf_loopcall *lc)
{
    node_clear(&lc->node);
    Py_CLEAR(lc->fn);
    Py_CLEAR(lc->args);
    Py_CLEAR(lc->origin);
    return 0;
}

static PyMemberDef loopcall_members[] = {
    NODE_MEMBERS
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot loopcall_slots[] = {
    {Py_tp_doc, "A future's done-callback that runs a call on a loop."},
    {Py_tp_dealloc, aio_dealloc},
    {Py_tp_traverse, loopcall_traverse},
    {Py_tp_clear, loopcall_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, loopcall_members},
    {0, NULL},
};

static PyType_Spec loopcall_spec = {
    .name = "cfutures._cfutures._LoopCall",
    .basicsize = sizeof(cf_loopcall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = loopcall_slots,
};

PyObject *
cf_aio_loop_call(cf_state *st, PyObject *loop, PyObject *fn,
                 PyObject *args, PyObject *origin, int inline_on_loop)
{
    cf_loopcall *lc = PyObject_GC_New(cf_loopcall, st->loopcall_type);
    if (lc == NULL) {
        return NULL;
    }
    node_init(&lc->node, post_callback, NODE_LOOPCALL);
    lc->fn = Py_NewRef(fn);
    lc->args = Py_NewRef(args);
    lc->origin = Py_NewRef(origin);
    lc->inline_on_loop = inline_on_loop;
    PyObject_GC_Track(lc);
    if (node_bind(st, &lc->node, loop) < 0) {
        Py_DECREF(lc);
        return NULL;
    }
    return (PyObject *)lc;
}

PyObject *
cf_aio_callback_target(cf_state *st, PyObject *entry)
{
    if (Py_IS_TYPE(entry, st->loopcall_type)) {
        PyObject *origin = ((cf_loopcall *)entry)->origin;
        return origin != NULL ? origin : Py_None;
    }
    return entry;
}

PyObject *
cf_aio_running_loop(cf_state *st)
{
    return running_loop(st, 0);
}

/* ---- to_thread ------------------------------------------------------ */

/* One to_thread() call: a loop-side future and a coroutine for the loop,
 * and for the pool the callable that runs fn in the copied context and
 * posts straight to the loop's batch. */
typedef struct {
    cf_aionode node;
    PyObject *callargs;       /* (fn, *args, *kwvalues); NULL once run */
    PyObject *kwnames;        /* NULL or a tuple of str */
    PyObject *context;        /* contextvars.copy_context() at the start */
    PyObject *result;         /* set by the worker */
    PyObject *exception;
    PyObject *pool_future;    /* what pool.submit() returned, to cancel */
    Py_ssize_t nargs;
    int handoff;              /* HANDOFF_*: atomic (see aiocall_spin) */
    int worker_started;       /* atomic: a worker took it */
    unsigned char submitted;
    unsigned char pool_cancelled; /* the pool cancelled it unrun (shutdown
                                     with cancel_futures): written before
                                     the post or handoff that publishes it */
    unsigned char asyncio_mode; /* asyncio.to_thread under install(): the
                                   loop's default executor, made as
                                   asyncio makes it */
    unsigned char retrieved;  /* the exception was delivered or read */
    unsigned char running;    /* counted in batch->calls_running; atomic
                                 exchange: uncounted once, by the worker
                                 or the loop thread */
} cf_aiocall;

/* The call no longer waits for a worker: uncount it. */
static void
aiocall_not_running(cf_aiocall *c)
{
    if (cf_exchange(&c->running, 0)) {
        cf_fetch_add(&c->node.batch->calls_running, -1);
    }
}

static int
aiocall_pool_cancelled(cf_aionode *n)
{
    return ((cf_aiocall *)n)->pool_cancelled;
}

/* Hand the finished call to the loop: to the loop thread polling for it,
 * or through the batch. */
static void
aiocall_deliver(cf_aiocall *c)
{
    aiocall_not_running(c);
    int spinning = HANDOFF_SPIN;
    if (!cf_cas(&c->handoff, &spinning, HANDOFF_DONE)) {
        batch_post(&c->node);
    }
}

/* Run by a pool worker: fn(*args, **kwargs) in the copied context.  Also
 * the done-callback of the pool's future (one argument): a call the pool
 * cancelled unrun (shutdown(cancel_futures=True)) cancels the awaiter, as
 * wrap_future's future is cancelled; after a run it does nothing. */
static PyObject *
aiocall_run(PyObject *self, PyObject *const *args, size_t nargsf,
            PyObject *unused_kw)
{
    cf_aiocall *c = (cf_aiocall *)self;
    PyObject *callargs, *kwnames, *ctx;
    if (PyVectorcall_NARGS(nargsf) == 1) {
        PyObject *pf = args[0];
        int cancelled = cf_future_check(
            PyType_GetModuleState(Py_TYPE(self)), pf)
            ? cf_future_state((cf_future *)pf) >= CF_CANCELLED
              && cf_future_state((cf_future *)pf) != CF_FINISHED
            : -1;
        if (cancelled < 0) {
            PyObject *r = PyObject_CallMethod(pf, "cancelled", NULL);
            if (r == NULL) {
                return NULL;
            }
            cancelled = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (cancelled < 0) {
                return NULL;
            }
        }
        if (!cancelled) {
            Py_RETURN_NONE;
        }
        CF_BEGIN_CRITICAL(self)
        callargs = c->callargs;
        kwnames = c->kwnames;
        ctx = c->context;
        c->callargs = c->kwnames = c->context = NULL;
        CF_END_CRITICAL()
        if (callargs == NULL) {
            Py_RETURN_NONE;       /* it ran */
        }
        Py_DECREF(callargs);
        Py_XDECREF(kwnames);
        Py_XDECREF(ctx);
        c->pool_cancelled = 1;
        aiocall_deliver(c);
        Py_RETURN_NONE;
    }
    /* Taken in the call's critical section: repr() on the loop thread
     * reads callargs there. */
    CF_BEGIN_CRITICAL(self)
    callargs = c->callargs;
    kwnames = c->kwnames;
    ctx = c->context;
    c->callargs = c->kwnames = c->context = NULL;
    CF_END_CRITICAL()
    if (callargs == NULL) {
        Py_RETURN_NONE;           /* ran already */
    }
    cf_store_release(&c->worker_started, 1);
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        PyObject **items = &PyTuple_GET_ITEM(callargs, 0);
        r = PyObject_Vectorcall(items[0], items + 1, c->nargs, kwnames);
        if (PyContext_Exit(ctx) < 0) {
            Py_CLEAR(r);
        }
    }
    if (r != NULL) {
        c->result = r;
    }
    else {
        /* Every exception goes to the awaiter, BaseException too, as the
         * stdlib's _WorkItem.run delivers it to the future. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        Py_XDECREF(type);
        Py_XDECREF(tb);
        c->exception = value;
    }
    /* The arguments may be big or hold resources: drop them here, as the
     * stdlib's work item does, not when the awaiter lets go. */
    Py_DECREF(callargs);
    Py_XDECREF(kwnames);
    Py_DECREF(ctx);
    cf_worker_returning();      /* no need to wake another worker */
    aiocall_deliver(c);
    Py_RETURN_NONE;
}

/* The shared to_thread pool (st->default_pool, guarded by st->lock): a
 * new reference, or NULL (no exception). */
static PyObject *
shared_pool_get(cf_state *st)
{
    cf_mutex_lock(&st->lock);
    PyObject *pool = Py_XNewRef(st->default_pool);
    cf_mutex_unlock(&st->lock);
    return pool;
}

/* Make `pool` (stolen) the shared one unless another thread did first;
 * returns the shared pool (new ref).  A losing pool is released outside
 * the lock: its dealloc stops its workers. */
static PyObject *
shared_pool_publish(cf_state *st, PyObject *pool)
{
    PyObject *loser = NULL;
    cf_mutex_lock(&st->lock);
    if (st->default_pool == NULL) {
        st->default_pool = Py_NewRef(pool);
    }
    else {
        loser = pool;
        pool = Py_NewRef(st->default_pool);
    }
    cf_mutex_unlock(&st->lock);
    Py_XDECREF(loser);
    return pool;
}

/* The pool that runs to_thread calls: the loop's default executor when it
 * is a cfutures pool (set with install() or set_default_executor), else
 * the shared module-level one.  New ref. */
static PyObject *
pick_pool(cf_state *st, PyObject *loop)
{
    PyObject *ex;
    /* No AttributeError is made when missing (uvloop has no such
     * attribute unless install() set it). */
    if (cf_getattr_optional(loop, st->str_default_executor, &ex) < 0) {
        return NULL;
    }
    if (ex != NULL) {
        if (st->aio_pool_type != NULL
            && PyObject_TypeCheck(ex, (PyTypeObject *)st->aio_pool_type)) {
            return ex;
        }
        Py_DECREF(ex);
    }
    PyObject *shared = shared_pool_get(st);
    if (shared != NULL) {
        return shared;
    }
    if (st->aio_pool_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures: no pool type configured for to_thread");
        return NULL;
    }
    PyObject *kw = Py_BuildValue("{s:s}", "thread_name_prefix",
                                 "cfutures.to_thread");
    if (kw == NULL) {
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    PyObject *pool = empty ? PyObject_Call(st->aio_pool_type, empty, kw)
                           : NULL;
    Py_XDECREF(empty);
    Py_DECREF(kw);
    if (pool == NULL) {
        return NULL;
    }
    /* Making it ran Python code: another thread may have made one too. */
    return shared_pool_publish(st, pool);
}

/* The pool asyncio.to_thread runs on under install(): the loop's
 * default executor, whatever it is, made on first use as asyncio's
 * run_in_executor(None, ...) makes it.  The common case, a cfutures pool
 * on an asyncio loop whose default executor was not shut down, is read
 * here; anything else asks cfutures._install (which also raises asyncio's
 * "Executor shutdown has been called").  New ref. */
static PyObject *
pick_default_executor(cf_state *st, PyObject *loop)
{
    PyObject *ex;
    if (cf_getattr_optional(loop, st->str_default_executor, &ex) < 0) {
        return NULL;
    }
    if (ex != NULL && st->aio_pool_type != NULL
        && PyObject_TypeCheck(ex, (PyTypeObject *)st->aio_pool_type)) {
        PyObject *called;
        if (cf_getattr_optional(loop, st->str__executor_shutdown_called,
                                &called) < 0) {
            Py_DECREF(ex);
            return NULL;
        }
        Py_XDECREF(called);       /* only its identity is compared */
        if (called == Py_False) {
            return ex;
        }
    }
    Py_XDECREF(ex);
    /* uninstall() may drop the hook meanwhile: take a reference under
     * st->lock. */
    cf_mutex_lock(&st->lock);
    PyObject *hook = Py_XNewRef(st->default_executor_hook);
    cf_mutex_unlock(&st->lock);
    if (hook == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures: asyncio.to_thread without install()");
        return NULL;
    }
    ex = PyObject_CallOneArg(hook, loop);
    Py_DECREF(hook);
    return ex;
}

/* Whether the one handle in asyncio's ready queue only drains the loop's
 * self-pipe (_read_from_self).  That is no work to wait for, and it is
 * there whenever the loop woke up for a worker's call_soon_threadsafe:
 * counting it as work meant that once a call went that way, the next one,
 * started from that very turn, skipped its poll and went that way too,
 * and so on for good (aiofiles one at a time: 120 instead of 40 us a
 * file). */
static int
ready_only_self_reader(cf_batch *b)
{
    if (b->self_reader == NULL) {
        return 0;
    }
    PyObject *h = PySequence_GetItem(b->ready, 0);
    if (h == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *cb = PyObject_GetAttrString(h, "_callback");
    Py_DECREF(h);
    if (cb == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = PyMethod_Check(cb)
            && PyMethod_GET_FUNCTION(cb) == b->self_reader;
    Py_DECREF(cb);
    return r;
}

/* Whether the loop thread should poll for the call it is about to
 * submit: only when nothing else could use the loop meanwhile (no other
 * call of ours pending on it, asyncio's ready queue empty but for the
 * self-pipe's drain), and not right after polls that missed (calls that
 * take longer than a poll). */
static int
spin_worthwhile(cf_batch *b, Py_ssize_t own)
{
    if (cf_load_relaxed(&b->calls_running) > own) {
        return 0;
    }
    if (b->spin_skip > 0) {
        b->spin_skip--;
        return 0;
    }
    if (b->ready != NULL) {
        Py_ssize_t n = PyObject_Length(b->ready);
        if (n < 0) {
            PyErr_Clear();      /* not a queue we can read: don't poll */
        }
        return n == 0 || (n == 1 && ready_only_self_reader(b));
    }
    return 1;
}

/* aiocall_spin's "a worker took it". */
static int
aiocall_started(void *c)
{
    return cf_load_acquire(&((cf_aiocall *)c)->worker_started);
}

/* One to_thread call at a time is the common case (`await to_thread(f)`
 * in a loop with nothing else to do), and there a noop's latency is two
 * thread wakeups: the worker's and, far costlier on a VM, the loop's from
 * its selector (measured 60-200 us when the other vCPU sleeps).  So the
 * loop thread, with the GIL released, polls for it, as Future.result()
 * does (CF_AIO_SPIN_START_NS for a worker to take it, CF_AIO_SPIN_NS for
 * the call), and a worker that finishes in time hands the outcome over
 * directly: no call_soon_threadsafe, no selector wakeup, no yield to the
 * loop.  Once both threads are hot they stay so, call after call.  The
 * loop is held up no longer than a callback of that length would hold
 * it, and after a miss (a longer call) the next polls are skipped.  1 if
 * the call is done. */
static int
aiocall_spin(cf_aiocall *c)
{
    int done = handoff_poll(&c->handoff, aiocall_started, c);
    spin_account(c->node.batch, done);
    return done;
}

/* After a poll: a miss makes the next polls skipped, 1, 3, 7, ... */
static void
spin_account(cf_batch *b, int done)
{
    if (done) {
        b->spin_backoff = 0;
    }
    else {
        b->spin_backoff = b->spin_backoff * 2 + 1;
        if (b->spin_backoff > CF_AIO_SPIN_MAX_BACKOFF) {
            b->spin_backoff = CF_AIO_SPIN_MAX_BACKOFF;
        }
        b->spin_skip = b->spin_backoff;
    }
}

/* The call could not be submitted: the raised Exception becomes its
 * outcome (anything else, KeyboardInterrupt, propagates: -1). */
static int
aiocall_fail(cf_state *st, cf_aiocall *c)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    Py_CLEAR(c->callargs);
    Py_CLEAR(c->kwnames);
    Py_CLEAR(c->context);
    c->exception = value;
    /* On the loop thread: complete now; callbacks run soon. */
    node_complete(st, &c->node);
    return 0;
}

/* Submit the call (bound to a running loop) to its pool; with `may_spin`
 * (a Task's first step, about to yield to the loop) maybe poll for its
 * outcome (aiocall_spin).  A failing submit (a pool shut down) becomes
 * the call's exception, as with run_in_executor inside
 * asyncio.to_thread. */
static int
aiocall_start(cf_state *st, cf_aiocall *c, int may_spin)
{
    if (c->submitted) {
        return 0;
    }
    if (node_bind_running(st, &c->node) < 0) {
        return -1;
    }
    /* A start that failed below (no pool) may be retried: replace. */
    Py_XSETREF(c->context, PyContext_CopyCurrent());
    if (c->context == NULL) {
        return -1;
    }
    PyObject *pool = c->asyncio_mode ? pick_default_executor(st, c->node.loop)
                                     : pick_pool(st, c->node.loop);
    if (pool == NULL) {
        if (c->asyncio_mode) {
            /* As asyncio.to_thread's coroutine raises it when awaited. */
            c->submitted = 1;
            return aiocall_fail(st, c);
        }
        return -1;
    }
    cf_batch *b = c->node.batch;
    int spin = may_spin && spin_worthwhile(b, 0);
    c->submitted = 1;
    /* Set before submit, which may switch threads (a new worker); the
     * pool's queue hands them over to the worker. */
    cf_store_relaxed(&c->handoff, spin ? HANDOFF_SPIN : HANDOFF_NONE);
    cf_store_relaxed(&c->running, 1);
    cf_fetch_add(&b->calls_running, 1);
    PyObject *args[2] = {pool, (PyObject *)c};
    PyObject *pf = PyObject_VectorcallMethod(
        st->str_submit, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(pool);
    if (pf == NULL) {
        aiocall_not_running(c);
        cf_store_relaxed(&c->handoff, HANDOFF_NONE);
        return aiocall_fail(st, c);
    }
    Py_XSETREF(c->pool_future, pf);
    /* The call is its pool future's done-callback too (aiocall_run with
     * one argument): a pool that cancels it unrun cancels the awaiter. */
    if (cf_future_check(st, pf)) {
        if (cf_future_add_done_callback((cf_future *)pf,
                                        (PyObject *)c) < 0) {
            return -1;
        }
    }
    else {
        PyObject *r = PyObject_CallMethod(pf, "add_done_callback", "O",
                                          (PyObject *)c);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (spin && aiocall_spin(c)) {
        node_complete(st, &c->node);
    }
    return 0;
}

static PyObject *
aiocall_outcome(cf_aiocall *c)
{
    if (c->exception != NULL) {
        c->retrieved = 1;
        raise_stored_exception(c->exception);
        return NULL;
    }
    return Py_NewRef(c->result != NULL ? c->result : Py_None);
}

static int
cancel_pool_future(cf_state *st, PyObject *pf)
{
    if (cf_future_check(st, pf)) {
        return cf_future_cancel((cf_future *)pf) < 0 ? -1 : 0;
    }
    PyObject *r = PyObject_CallMethod(pf, "cancel", NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
aiocall_traverse(cf_aiocall *c, visitproc visit, void *arg)
{
    Py_VISIT(c->callargs);
    Py_VISIT(c->kwnames);
    Py_VISIT(c->context);
    Py_VISIT(c->result);
    Py_VISIT(c->exception);
    Py_VISIT(c->pool_future);
    return node_traverse(&c->node, visit, arg);
}

static int
aiocall_clear(cf_aiocall *c)
{
    aiocall_not_running(c);
    node_clear(&c->node);
    Py_CLEAR(c->callargs);
    Py_CLEAR(c->kwnames);
    Py_CLEAR(c->context);
    Py_CLEAR(c->result);
    Py_CLEAR(c->exception);
    Py_CLEAR(c->pool_future);
    return 0;
}

static int
aiocall_unstarted(cf_aionode *n)
{
    return !((cf_aiocall *)n)->submitted && node_lstate(n) == LS_PENDING;
}

/* As asyncio.Future: an exception nobody retrieved goes to the loop's
 * exception handler when the call is collected. */
static void
aiocall_finalize(PyObject *self)
{
    cf_aiocall *c = (cf_aiocall *)self;
    if (aiocall_unstarted(&c->node)) {
        /* Never awaited, so it never ran: warn as CPython does for the
         * coroutine asyncio.to_thread() returns. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         "coroutine 'to_thread' was never awaited", 1) < 0) {
            PyErr_WriteUnraisable(self);
        }
        PyErr_Restore(type, value, tb);
        return;
    }
    if (c->exception == NULL || c->retrieved || c->node.loop == NULL
        || node_lstate(&c->node) != LS_DONE) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *context = Py_BuildValue(
        "{s:s,s:O,s:O}", "message",
        "cfutures.to_thread() exception was never retrieved",
        "exception", c->exception, "future", self);
    if (context != NULL) {
        PyObject *r = PyObject_CallMethod(c->node.loop,
                                          "call_exception_handler", "O",
                                          context);
        Py_DECREF(context);
        Py_XDECREF(r);
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(self);
    }
    PyErr_Restore(type, value, tb);
}

static PyObject *
aiocall_repr(cf_aiocall *c)
{
    static const char *names[] = {"pending", "finished", "cancelled"};
    PyObject *fn;
    CF_BEGIN_CRITICAL(c)
    fn = c->callargs ? PyTuple_GET_ITEM(c->callargs, 0) : Py_None;
    Py_INCREF(fn);
    CF_END_CRITICAL()
    PyObject *r = PyUnicode_FromFormat("<cfutures.to_thread %s %R>",
                                       names[node_lstate(&c->node)], fn);
    Py_DECREF(fn);
    return r;
}

static PyObject *
aiocall_get_name(PyObject *self, void *closure)
{
    return PyUnicode_FromString("to_thread");
}

static PyObject *
aiocall_get_running(PyObject *self, void *closure)
{
    Py_RETURN_FALSE;
}

static PyMethodDef aiocall_methods[] = {
    NODE_METHODS
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef aiocall_getset[] = {
    NODE_GETSET
    {"__name__", aiocall_get_name, NULL, NULL, NULL},
    {"__qualname__", aiocall_get_name, NULL, NULL, NULL},
    {"cr_running", aiocall_get_running, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef aiocall_members[] = {
    NODE_MEMBERS
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot aiocall_slots[] = {
    {Py_tp_doc, "A cfutures.to_thread() call: a coroutine and an asyncio "
                "future at once.\n\nAwait it, gather it, pass it to "
                "asyncio.wait or make it a task; it is submitted when it is "
                "first awaited or handed to asyncio."},
    {Py_tp_dealloc, aio_dealloc},
    {Py_tp_finalize, aiocall_finalize},
    {Py_tp_traverse, aiocall_traverse},
    {Py_tp_clear, aiocall_clear},
    {Py_tp_repr, aiocall_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, node_iternext},
    {Py_am_await, node_await},
    {Py_am_send, node_am_send},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, aiocall_methods},
    {Py_tp_getset, aiocall_getset},
    {Py_tp_members, aiocall_members},
    {0, NULL},
};

static PyType_Spec aiocall_spec = {
    .name = "cfutures._cfutures._ToThreadCall",
    .basicsize = sizeof(cf_aiocall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = aiocall_slots,
};

/* ---- the kind-specific dispatch ------------------------------------- */

static int
node_start(cf_state *st, cf_aionode *n, int may_spin)
{
    if (node_lstate(n) != LS_PENDING) {
        return 0;
    }
    if (n->kind == NODE_AWAITER) {
        return awaiter_start(st, (cf_awaiter *)n, may_spin);
    }
    return aiocall_start(st, (cf_aiocall *)n, may_spin);
}

static PyObject *
node_outcome(cf_aionode *n)
{
    if (n->kind == NODE_AWAITER) {
        return awaiter_outcome((cf_awaiter *)n);
    }
    return aiocall_outcome((cf_aiocall *)n);
}

static PyObject *
node_exception(cf_aionode *n)
{
    PyObject *exc;
    if (n->kind == NODE_AWAITER) {
        PyObject *result;
        (void)cf_future_outcome(((cf_awaiter *)n)->future, &result, &exc);
        Py_XDECREF(result);
        ((cf_awaiter *)n)->retrieved = 1;
    }
    else {
        exc = Py_XNewRef(((cf_aiocall *)n)->exception);
        ((cf_aiocall *)n)->retrieved = 1;
    }
    if (exc == NULL || !PyExceptionInstance_Check(exc)) {
        return exc != NULL ? exc : Py_NewRef(Py_None);
    }
    PyObject *r = convert_stop_iteration(exc);
    Py_DECREF(exc);
    return r;
}

static int
node_cancel_source(cf_state *st, cf_aionode *n)
{
    if (n->kind == NODE_AWAITER) {
        cf_awaiter *aw = (cf_awaiter *)n;
        return cf_future_cancel(aw->future) < 0 ? -1 : 0;
    }
    cf_aiocall *c = (cf_aiocall *)n;
    if (c->pool_future != NULL) {
        PyObject *pf = c->pool_future;
        c->pool_future = NULL;
        int rc = cancel_pool_future(st, pf);
        Py_DECREF(pf);
        return rc;
    }
    if (!c->submitted) {
        /* Never to run: drop the arguments now. */
        Py_CLEAR(c->callargs);
        Py_CLEAR(c->kwnames);
    }
    return 0;
}

static PyObject *
make_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, int asyncio_mode)
{
    cf_state *st = cf_get_state(module);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "to_thread() missing 1 required positional argument: "
                        "'func'");
        return NULL;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *callargs = PyTuple_New(nargs + nkw);
    if (callargs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        PyTuple_SET_ITEM(callargs, i, Py_NewRef(args[i]));
    }
    cf_aiocall *c = PyObject_GC_New(cf_aiocall, st->aiocall_type);
    if (c == NULL) {
        Py_DECREF(callargs);
        return NULL;
    }
    node_init(&c->node, aiocall_run, NODE_CALL);
    c->callargs = callargs;
    c->kwnames = nkw ? Py_NewRef(kwnames) : NULL;
    c->context = NULL;
    c->result = NULL;
    c->exception = NULL;
    c->pool_future = NULL;
    c->nargs = nargs - 1;
    c->handoff = HANDOFF_NONE;
    c->worker_started = 0;
    c->submitted = 0;
    c->pool_cancelled = 0;
    c->asyncio_mode = (unsigned char)asyncio_mode;
    c->retrieved = 0;
    c->running = 0;
    PyObject_GC_Track(c);
    /* Lazy, as asyncio.to_thread's coroutine: bound to the running loop
     * and submitted on first use (node_start: a Task's first step,
     * `await`, or add_done_callback from gather, wait, shield, wait_for,
     * ensure_future), so a call that is never awaited never runs. */
    return (PyObject *)c;
}

/* to_thread(fn, /, *args, **kwargs) */
static PyObject *
to_thread(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    return make_call(module, args, nargs, kwnames, 0);
}

/* _asyncio_to_thread(fn, /, *args, **kwargs): what install() makes
 * asyncio.to_thread: a to_thread call on the loop's default executor. */
static PyObject *
asyncio_to_thread(PyObject *module, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    return make_call(module, args, nargs, kwnames, 1);
}

/* _aio_set_default_executor_hook(fn or None) */
static PyObject *
aio_set_default_executor_hook(PyObject *module, PyObject *fn)
{
    cf_state *st = cf_get_state(module);
    PyObject *new = fn == Py_None ? NULL : Py_NewRef(fn);
    cf_mutex_lock(&st->lock);
    PyObject *old = st->default_executor_hook;
    st->default_executor_hook = new;
    cf_mutex_unlock(&st->lock);
    Py_XDECREF(old);              /* outside the lock: it may run code */
    Py_RETURN_NONE;
}

/* _aio_configure(pool_type): the executor class whose instances to_thread
 * runs on when one is the loop's default executor, and of which it makes
 * its shared pool. */
static PyObject *
aio_configure(PyObject *module, PyObject *pool_type)
{
    cf_state *st = cf_get_state(module);
    if (!PyType_Check(pool_type)) {
        PyErr_SetString(PyExc_TypeError, "pool type must be a class");
        return NULL;
    }
    Py_XSETREF(st->aio_pool_type, Py_NewRef(pool_type));
    Py_RETURN_NONE;
}

/* _aio_shared_pool(create=True): the shared to_thread pool (or None). */
static PyObject *
aio_shared_pool(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cf_state *st = cf_get_state(module);
    PyObject *shared = shared_pool_get(st);
    if (shared != NULL) {
        return shared;
    }
    if (nargs >= 1) {
        int create = PyObject_IsTrue(args[0]);
        if (create < 0) {
            return NULL;
        }
        if (!create) {
            Py_RETURN_NONE;
        }
    }
    /* None has no _default_executor: this makes the shared pool. */
    return pick_pool(st, Py_None);
}

/* _aio_forget_shared_pool(): after fork() the pool's threads are gone in
 * the child; the next to_thread makes a new pool. */
static PyObject *
aio_forget_shared_pool(PyObject *module, PyObject *unused)
{
    cf_state *st = cf_get_state(module);
    cf_mutex_lock(&st->lock);
    PyObject *old = st->default_pool;
    st->default_pool = NULL;
    cf_mutex_unlock(&st->lock);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyMethodDef aio_functions[] = {
    {"to_thread", (PyCFunction)(void (*)(void))to_thread,
     METH_FASTCALL | METH_KEYWORDS,
     "to_thread(func, /, *args, **kwargs)\n--\n\n"
     "Run func(*args, **kwargs) in a cfutures thread pool; await the "
     "result.\n\nThe counterpart of asyncio.to_thread: context variables "
     "are copied, keyword arguments passed.  It runs on the loop's default "
     "executor when that is a cfutures pool (see install()), else on a "
     "shared pool.  Like asyncio.to_thread's coroutine it is lazy: func "
     "is submitted when the call is first awaited or used as a future "
     "(gather, wait, shield, wait_for, create_task), and a call that is "
     "never awaited never runs.  The call is both an asyncio future and "
     "a coroutine: await it, gather it, or pass it to asyncio.create_task "
     "or TaskGroup.create_task."},
    {"_asyncio_to_thread", (PyCFunction)(void (*)(void))asyncio_to_thread,
     METH_FASTCALL | METH_KEYWORDS,
     "to_thread(func, /, *args, **kwargs)\n--\n\n"
     "asyncio.to_thread as cfutures.install() makes it: run func(*args, "
     "**kwargs) on the running loop's default executor, in a copy of the "
     "current context, and await the result.  The call is also an asyncio "
     "future (see cfutures.to_thread)."},
    {"_loop_future", (PyCFunction)(void (*)(void))loop_future,
     METH_FASTCALL, NULL},
    {"_aio_set_default_executor_hook", aio_set_default_executor_hook,
     METH_O, NULL},
    {"_aio_configure", aio_configure, METH_O, NULL},
    {"_aio_shared_pool", (PyCFunction)(void (*)(void))aio_shared_pool,
     METH_FASTCALL, NULL},
    {"_aio_forget_shared_pool", aio_forget_shared_pool, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int
cf_aio_setup(PyObject *module, cf_state *st)
{
#define INTERN(field, s)                                           \
    do {                                                           \
        if ((st->field = PyUnicode_InternFromString(s)) == NULL) { \
            return -1;                                             \
        }                                                          \
    } while (0)
    INTERN(batch_key, "cfutures._cfutures.batch");
    INTERN(str_call_soon_threadsafe, "call_soon_threadsafe");
    INTERN(str_call_soon, "call_soon");
    INTERN(str_submit, "submit");
    INTERN(str_default_executor, "_default_executor");
    INTERN(str__ready, "_ready");
    INTERN(str__executor_shutdown_called, "_executor_shutdown_called");
#undef INTERN
    st->context_kwnames = Py_BuildValue("(s)", "context");
    if (st->context_kwnames == NULL) {
        return -1;
    }
#define TYPE(field, spec)                                               \
    do {                                                                \
        st->field = (PyTypeObject *)PyType_FromModuleAndSpec(           \
            module, &spec, NULL);                                       \
        if (st->field == NULL) {                                        \
            return -1;                                                  \
        }                                                               \
    } while (0)
    TYPE(batch_type, batch_spec);
    TYPE(awaiter_type, awaiter_spec);
    TYPE(aiocall_type, aiocall_spec);
    TYPE(loopcall_type, loopcall_spec);
    TYPE(loopfuture_type, loopfuture_spec);
#undef TYPE
    return PyModule_AddFunctions(module, aio_functions);
}
