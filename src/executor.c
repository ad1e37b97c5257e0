/* ThreadPoolExecutor: work queue, worker loop, lifecycle.
 *
 * Lib/concurrent/futures/thread.py is the specification.  The stdlib pays,
 * per task, a _WorkItem, a SimpleQueue put/get, a Semaphore release and
 * acquire and a few bytecode-level calls, and its workers hand the GIL to
 * each other through the queue's lock.  Here:
 *
 * - A pool (the `_work_queue` object) is the shared core: a queue of work
 *   items in linked chunks, the worker threads, the idle workers, the
 *   shutdown/broken state.  Its fields are guarded by the pool's critical
 *   section (a no-op with the GIL; README "Concurrency model"): a pop and
 *   the decision to sleep happen in one section, and so do submit's
 *   shutdown checks and its push, so no item is queued that no worker
 *   will run, and no worker sleeps past a push or a stop.
 * - A worker that holds the GIL runs queued items back to back in C.  It
 *   sleeps on its own cf_event only when the queue is empty, and a submit
 *   pays a wakeup (a futex) only when the queue holds more items than
 *   workers already being woken and it pops a sleeping worker off the idle
 *   stack; with no sleeper and room below max_workers it starts a thread,
 *   as the stdlib's _idle_semaphore does.  Workers busy running tasks are
 *   never signalled: they come back to the queue by themselves.
 * - Before sleeping, one worker per pool polls for a few microseconds with
 *   the GIL released, yielding the CPU: the one-at-a-time round trip
 *   (submit, result, submit, ...) then skips the futex and the wakeup.
 * - The executor object is a handle on its pool.  Workers hold the pool,
 *   not the executor, so dropping the executor runs its dealloc, which
 *   stops the pool: the workers drain the queue and exit.  This replaces
 *   the stdlib's weakref callback and works for executors in cycles too.
 * - Workers are threading.Thread objects whose target is a C method, so
 *   names, threading.enumerate(), settrace/setprofile and the join at
 *   interpreter exit behave as with the stdlib. */
#include "cfutures.h"

#include <structmember.h>

/* ---- the work queue -------------------------------------------------- */

typedef struct {
    PyObject *future;   /* cf_future */
    PyObject *fn;
    PyObject *args;     /* tuple, NULL for no arguments, or the argument */
    PyObject *kwargs;   /* dict, or NULL */
    int single;         /* args is the one argument (map over one
                           iterable: no tuple, so no GC allocation) */
} cf_item;

/* 128 items of 32 bytes: 4 KiB chunks, freed as they drain, so a burst of
 * a million tasks gives its memory back (one spare chunk is kept). */
#define CF_CHUNK 128

typedef struct cf_chunk {
    struct cf_chunk *next;
    cf_item items[CF_CHUNK];
} cf_chunk;

/* A worker's sleeping place, on the worker's C stack; linked into the
 * pool's idle stack while the worker sleeps. */
typedef struct cf_worker {
    struct cf_worker *prev;
    struct cf_worker *next;
    cf_event ev;
    int in_idle;
} cf_worker;

/* Guards: everything below is read and written in the pool's critical
 * section, except where a field says otherwise. */
typedef struct cf_pool {
    PyObject_HEAD
    cf_state *st;
    PyObject *module;           /* keeps st's memory alive until dealloc */
    PyObject *weakreflist;
    /* The registry (st->pools), under st->lock.  selfref, a weak
     * reference to this pool, is how a walker of the registry takes a
     * strong reference: the pool itself may be in its dealloc, waiting
     * for st->lock to unlink itself. */
    struct cf_pool *prev_pool;
    struct cf_pool *next_pool;
    PyObject *selfref;
    cf_chunk *head;             /* pop from head[head_i] */
    cf_chunk *tail;             /* push at tail[tail_i] */
    cf_chunk *spare;
    int head_i;
    int tail_i;
    Py_ssize_t count;           /* queued items */
    cf_worker *idle;            /* sleeping workers, most recent first */
    Py_ssize_t max_workers;
    Py_ssize_t n_workers;       /* threads in `threads` plus n_starting:
                                   what max_workers bounds */
    Py_ssize_t n_starting;      /* reserved by a submit, not yet in
                                   `threads` (Thread() and start()) */
    Py_ssize_t n_waking;        /* woken, not yet holding the GIL again */
    PyObject *threads;          /* set of threading.Thread */
    PyObject *broken;           /* NULL, or the message (str) */
    int spinning;               /* a worker polls before sleeping */
    cf_worker *spinner;         /* that worker while it polls, or NULL */
    Py_ssize_t n_returning;     /* workers only posting a finished
                                   to_thread call (cf_worker_returning);
                                   atomic (cf_fetch_add), read relaxed
                                   in the critical section as a hint */
    int shutdown;               /* executor._shutdown */
    int stop;                   /* workers exit once the queue is empty */
    Py_ssize_t handles;         /* executors on this pool (copy.copy makes
                                   more); the last one gone stops it;
                                   atomic */
} cf_pool;

static int
pool_push(cf_pool *p, PyObject *future, PyObject *fn, PyObject *args,
          PyObject *kwargs, int single)
{
    if (p->tail == NULL || p->tail_i == CF_CHUNK) {
        cf_chunk *c = p->spare;
        if (c != NULL) {
            p->spare = NULL;
        }
        else {
            c = PyMem_Malloc(sizeof(cf_chunk));
            if (c == NULL) {
                PyErr_NoMemory();
                return -1;
            }
        }
        c->next = NULL;
        if (p->tail == NULL) {
            p->head = c;
            p->head_i = 0;
        }
        else {
            p->tail->next = c;
        }
        p->tail = c;
        p->tail_i = 0;
    }
    cf_item *it = &p->tail->items[p->tail_i++];
    it->future = future;
    it->fn = fn;
    it->args = args;
    it->kwargs = kwargs;
    it->single = single;
    p->count++;
    return 0;
}

/* 1 and the item's references moved to *out, or 0 when empty. */
static int
pool_pop(cf_pool *p, cf_item *out)
{
    if (p->count == 0) {
        return 0;
    }
    cf_chunk *c = p->head;
    *out = c->items[p->head_i++];
    p->count--;
    if (p->count == 0) {
        /* Empty means head == tail: start over in the same chunk. */
        p->head_i = p->tail_i = 0;
    }
    else if (p->head_i == CF_CHUNK) {
        p->head = c->next;
        p->head_i = 0;
        if (p->spare == NULL) {
            p->spare = c;
        }
        else {
            PyMem_Free(c);
        }
    }
    return 1;
}

static void
item_clear(cf_item *it)
{
    Py_CLEAR(it->future);
    Py_CLEAR(it->fn);
    Py_CLEAR(it->args);
    Py_CLEAR(it->kwargs);
}

static void idle_remove(cf_pool *p, cf_worker *w);

/* Wake one idle worker: the spinning one if any, else the most recently
 * idle one (one futex).  The spinner polls its event without the GIL, so
 * handing it the work costs no futex and no scheduler wakeup; waking the
 * top of the stack instead (often a sleeper: the spinner is whichever
 * worker went idle first) paid both and left the spinner burning a core. */
static void
pool_wake_one(cf_pool *p)
{
    cf_worker *w = p->spinner;
    if (w != NULL && w->in_idle) {
        p->spinner = NULL;
    }
    else {
        w = p->idle;
    }
    idle_remove(p, w);
    p->n_waking++;
    cf_event_set(&w->ev);
}

/* After a push or a pop, with p->count items queued: make sure each is
 * taken by a worker that is awake or being woken.  As the stdlib's
 * _idle_semaphore, an idle worker is reused before a new thread starts
 * (0: the caller should start one).  A worker that is running tasks is not
 * woken: it comes back to the queue by itself, without a futex. */
static int
pool_cover(cf_pool *p)
{
    if (p->count <= p->n_waking + cf_load_relaxed(&p->n_returning)) {
        return 1;
    }
    if (p->idle != NULL) {
        pool_wake_one(p);
        return 1;
    }
    return 0;
}

static void
pool_wake_all(cf_pool *p)
{
    while (p->idle != NULL) {
        pool_wake_one(p);
    }
}

/* No more submits will come: workers drain the queue and exit. */
static void
pool_stop(cf_pool *p)
{
    CF_BEGIN_CRITICAL(p)
    p->stop = 1;
    pool_wake_all(p);
    CF_END_CRITICAL()
}

/* An executor lets go of its pool: stop it once no executor is left. */
static void
pool_release_handle(cf_pool *p)
{
    /* Atomic: a free-threaded build may copy and drop concurrently. */
    if (cf_fetch_add(&p->handles, -1) == 1) {
        pool_stop(p);
    }
}

static void
idle_remove(cf_pool *p, cf_worker *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    }
    else {
        p->idle = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    w->next = w->prev = NULL;
    w->in_idle = 0;
}

/* ---- attribute names ------------------------------------------------ */

/* Look names up through interned strings: CPython 3.11's type attribute
 * cache keys on the name's address, so a fresh string per call (as
 * PyObject_GetAttrString makes) would fill it with dead entries. */
static PyObject *
getattr_i(PyObject *obj, const char *name)
{
    PyObject *n = PyUnicode_InternFromString(name);
    if (n == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_GetAttr(obj, n);
    Py_DECREF(n);
    return r;
}

static PyObject *
call_method_i(PyObject *obj, const char *name, PyObject *arg)
{
    PyObject *n = PyUnicode_InternFromString(name);
    if (n == NULL) {
        return NULL;
    }
    PyObject *r = arg == NULL ? PyObject_CallMethodNoArgs(obj, n)
                              : PyObject_CallMethodOneArg(obj, n, arg);
    Py_DECREF(n);
    return r;
}

/* ---- logging --------------------------------------------------------- */

/* With an exception set: LOGGER.critical(msg, exc_info=exc), as the
 * stdlib's `LOGGER.critical(msg, exc_info=True)` in an except clause. */
static void
log_critical(cf_state *st, const char *msg)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        value = Py_NewRef(Py_None);
    }
    else if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *meth = getattr_i(st->logger, "critical");
    PyObject *r = NULL;
    if (meth != NULL) {
        PyObject *args[2] = {NULL, NULL};
        args[0] = PyUnicode_FromString(msg);
        args[1] = value;
        PyObject *kwnames = Py_BuildValue("(s)", "exc_info");
        if (args[0] != NULL && kwnames != NULL) {
            r = PyObject_Vectorcall(meth, args, 1, kwnames);
        }
        Py_XDECREF(args[0]);
        Py_XDECREF(kwnames);
        Py_DECREF(meth);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable(st->logger);
    }
    Py_XDECREF(r);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* ---- the worker ------------------------------------------------------ */

static void
run_item(cf_pool *p, cf_item *it)
{
    cf_future *f = (cf_future *)it->future;
    int r = cf_future_set_running_or_notify_cancel(f);
    if (r == 1) {
        PyObject *res;
        if (it->single) {
            res = PyObject_Vectorcall(it->fn, &it->args, 1, NULL);
        }
        else if (it->kwargs == NULL) {
            /* Vectorcall straight from the stored tuple: no re-packing. */
            res = PyObject_Vectorcall(
                it->fn,
                it->args ? &PyTuple_GET_ITEM(it->args, 0) : NULL,
                it->args ? PyTuple_GET_SIZE(it->args) : 0, NULL);
        }
        else {
            PyObject *args = it->args ? Py_NewRef(it->args) : PyTuple_New(0);
            res = args ? PyObject_Call(it->fn, args, it->kwargs) : NULL;
            Py_XDECREF(args);
        }
        int rc;
        if (res != NULL) {
            rc = cf_future_set_result(f, res);
            Py_DECREF(res);
        }
        else {
            /* Any BaseException goes to the future, as the stdlib's
             * `except BaseException as exc: future.set_exception(exc)`. */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (tb != NULL && value != NULL) {
                PyException_SetTraceback(value, tb);
            }
            rc = cf_future_set_exception(f, value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        if (rc < 0) {
            log_critical(p->st, "Exception in worker");
        }
    }
    else if (r < 0) {
        log_critical(p->st, "Exception in worker");
    }
    item_clear(it);
}

/* Flag the pool broken, then fail what is queued.  Set in the section a
 * submit checks before its push: every item pushed before it is failed by
 * the drain below, every submit after it raises. */
static void
pool_initializer_failed(cf_pool *p)
{
    PyObject *msg = PyUnicode_FromString(
        "A thread initializer failed, the thread pool is not usable "
        "anymore");
    if (msg == NULL) {
        PyErr_WriteUnraisable((PyObject *)p);
        return;
    }
    PyObject *broken;
    CF_BEGIN_CRITICAL(p)
    if (p->broken == NULL) {
        p->broken = Py_NewRef(msg);
    }
    broken = Py_NewRef(p->broken);
    CF_END_CRITICAL()
    Py_DECREF(msg);
    for (;;) {
        cf_item it;
        int got;
        CF_BEGIN_CRITICAL(p)
        got = pool_pop(p, &it);
        CF_END_CRITICAL()
        if (!got) {
            break;
        }
        PyObject *exc = PyObject_CallOneArg(p->st->BrokenThreadPool,
                                            broken);
        if (exc == NULL
            || cf_future_set_exception((cf_future *)it.future, exc) < 0) {
            PyErr_WriteUnraisable((PyObject *)p);
        }
        Py_XDECREF(exc);
        item_clear(&it);
    }
    Py_DECREF(broken);
}

#define CF_SPIN_NS 30000
#define CF_SPIN_GRACE_NS 0

/* Without the GIL: poll ev for up to CF_SPIN_NS.  Once set, wait a little
 * more, since the submitter usually still holds the GIL for a microsecond
 * (until it blocks in result()); taking the GIL then would sleep on it. */
static void
spin_until_set(cf_event *ev)
{
    int64_t start = cf_monotonic_ns();
    for (int i = 0;; i++) {
        if (cf_load_acquire(&ev->is_set)) {
            int64_t t = cf_monotonic_ns();
            while (cf_monotonic_ns() - t < CF_SPIN_GRACE_NS) {
                CF_CPU_RELAX();
            }
            return;
        }
        /* Yield, not just pause: the woken submitter is often placed on
         * this very CPU (wake-affine) and must get to run. */
        cf_yield();
        if ((i & 3) == 3 && cf_monotonic_ns() - start > CF_SPIN_NS) {
            return;
        }
    }
}

/* Fairness.  Another thread that wants the GIL waits one switch interval,
 * then sets the interpreter's drop request; the holder honours it in the
 * eval loop's periodic check (the "eval breaker"), drops the GIL and waits
 * until the other thread has taken it (FORCE_SWITCHING).  A Python task
 * runs that check at its own entry, but a stream of C tasks (`abs`, a
 * partial of `submit`) runs no bytecode, so the request would never be
 * seen.  Releasing and retaking the GIL by hand is no substitute: nobody
 * requested it, so nothing makes the worker wait, it takes the GIL straight
 * back, and the retake bumps the GIL's switch counter, which tells the
 * waiter that a switch happened, so it restarts its interval without ever
 * setting the drop request: it starved for seconds.  So every few tasks the
 * worker calls a Python no-op, whose entry runs the same check the stdlib's
 * bytecode worker loop runs between tasks: the GIL is handed over exactly
 * when another thread asked for it, and (3.12+) a scheduled collection and
 * (free-threaded) a stop-the-world request are served too.  ~40 ns per
 * call, so 1/8 of that per task. */
#define CF_SWITCH_EVERY 8

static void
switch_point(cf_state *st)
{
    PyObject *r = PyObject_CallNoArgs(st->switch_point);
    if (r == NULL) {
        /* An asynchronous exception (PyThreadState_SetAsyncExc) lands
         * here as it would land in the stdlib's worker loop. */
        log_critical(st, "Exception in worker");
    }
    Py_XDECREF(r);
}

/* The pool of the worker running in this thread, for
 * cf_worker_returning(); NULL outside workers. */
static CF_THREAD_LOCAL cf_pool *current_pool;
static CF_THREAD_LOCAL int current_returning;
/* Set in a child forked by a task running in this worker thread. */
static CF_THREAD_LOCAL int current_orphan;

/* Called by a to_thread call running in a worker once its function has
 * returned, before it posts the outcome to the loop: this worker will pop
 * the queue within microseconds, so a submit the loop makes on seeing the
 * outcome needs no other worker woken.  (The one-at-a-time `await
 * to_thread(f)` then runs on one worker back to back; waking an idle one
 * instead paid a futex, a wakeup and a third thread contending for the
 * GIL.)  Only for our own post, never for user done-callbacks, which may
 * block on the next task. */
void
cf_worker_returning(void)
{
    cf_pool *p = current_pool;
    if (p != NULL && !current_returning) {
        current_returning = 1;
        (void)cf_fetch_add(&p->n_returning, 1);
    }
}

static Py_ssize_t
pool_n_starting(cf_pool *p)
{
    Py_ssize_t n;
    CF_BEGIN_CRITICAL(p)
    n = p->n_starting;
    CF_END_CRITICAL()
    return n;
}

/* Remove the calling thread from p->threads. */
static void
worker_uncount(cf_pool *p)
{
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *me = threading ? call_method_i(threading, "current_thread",
                                             NULL)
                             : NULL;
    /* The submit that started this worker adds it to p->threads only once
     * start() has returned, which may be after the worker ran its call:
     * wait for that (n_starting counts such submits), or it would be
     * added after it left, and counted for ever. */
    int found = 0;
    while (me != NULL && p->threads != NULL
           && (found = PySet_Contains(p->threads, me)) == 0
           && pool_n_starting(p) > 0) {
        PyObject *r = PyObject_CallFunction(p->st->time_sleep, "d", 0.001);
        if (r == NULL) {
            found = -1;
            break;
        }
        Py_DECREF(r);
    }
    int gone = 0;
    if (me == NULL || p->threads == NULL || found < 0
        || (gone = PySet_Discard(p->threads, me)) < 0) {
        PyErr_WriteUnraisable((PyObject *)p);
    }
    if (gone == 1) {
        CF_BEGIN_CRITICAL(p)
        p->n_workers--;
        CF_END_CRITICAL()
    }
    Py_XDECREF(me);
    Py_XDECREF(threading);
}

/* For tests: _cfutures._test_fail_worker_events(n) makes the event of the
 * next n workers fail to initialise (as on MemoryError), a failure there
 * is no other way to provoke. */
static int test_fail_events;

static int
test_fail_event(void)
{
    int n = cf_load_acquire(&test_fail_events);
    while (n > 0) {
        if (cf_cas(&test_fail_events, &n, n - 1)) {
            PyErr_NoMemory();
            return 1;
        }
    }
    return 0;
}

static PyObject *
test_fail_worker_events(PyObject *module, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    cf_store_release(&test_fail_events, (int)n);
    Py_RETURN_NONE;
}

/* The thread target: pool._worker(initializer, initargs). */
static PyObject *
pool_worker(cf_pool *p, PyObject *const *args, Py_ssize_t nargs)
{
    cf_state *st = p->st;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_worker() takes 2 arguments");
        return NULL;
    }
    Py_INCREF(p);
    if (args[0] != Py_None) {
        PyObject *initargs = PySequence_Tuple(args[1]);
        PyObject *r = NULL;
        if (initargs != NULL) {
            r = PyObject_Call(args[0], initargs, NULL);
            Py_DECREF(initargs);
        }
        if (r == NULL) {
            log_critical(st, "Exception in initializer:");
            pool_initializer_failed(p);
            Py_DECREF(p);
            Py_RETURN_NONE;
        }
        Py_DECREF(r);
    }
    cf_worker w = {NULL, NULL, {NULL, 0}, 0};
    /* Without its event a worker cannot sleep: it still runs what is
     * queued (the submit that started it queued a call and counts on it),
     * then leaves. */
    int no_event = test_fail_event() || cf_event_init(&w.ev) < 0;
    if (no_event) {
        log_critical(st, "Exception in worker");
    }
    unsigned int n = 0;
    int stopping = 0;
    for (;;) {
        cf_item it;
        int got, spin = 0;
        /* Pop, or else register to sleep, in one section that also reads
         * `stop`: a submit's push or a pool_stop then comes either before
         * it (the pop finds the item, or the worker leaves) or after it
         * (and finds this worker on the idle stack to wake). */
        CF_BEGIN_CRITICAL(p)
        got = pool_pop(p, &it);
        if (got) {
            if (p->count > 0) {
                /* More work than this worker: work that releases the GIL
                 * spreads over the pool. */
                (void)pool_cover(p);
            }
        }
        else if (p->stop || no_event) {
            stopping = p->stop;
        }
        else {
            /* Nothing queued: sleep until a submit pops us off the idle
             * stack (one futex then, none while the queue is busy). */
            w.prev = NULL;
            w.next = p->idle;
            if (p->idle != NULL) {
                p->idle->prev = &w;
            }
            p->idle = &w;
            w.in_idle = 1;
            if (!p->spinning) {
                /* One worker at a time polls briefly before it sleeps: a
                 * submit that follows soon after (the one-at-a-time round
                 * trip) then costs no futex and no wakeup latency. */
                p->spinning = 1;
                p->spinner = &w;      /* pool_wake_one prefers it */
                spin = 1;
            }
        }
        CF_END_CRITICAL()
        if (got) {
            current_pool = p;
            run_item(p, &it);
            current_pool = NULL;
            if (current_returning) {
                current_returning = 0;
                (void)cf_fetch_add(&p->n_returning, -1);
            }
            if (current_orphan) {
                break;
            }
            if ((++n & (CF_SWITCH_EVERY - 1)) == 0) {
                switch_point(st);
            }
            continue;
        }
        if (stopping || no_event) {
            break;
        }
        if (spin) {
            Py_BEGIN_ALLOW_THREADS
            spin_until_set(&w.ev);
            Py_END_ALLOW_THREADS
            CF_BEGIN_CRITICAL(p)
            p->spinning = 0;
            if (p->spinner == &w) {
                p->spinner = NULL;
            }
            CF_END_CRITICAL()
        }
        int r = cf_event_wait(&w.ev, -1);
        CF_BEGIN_CRITICAL(p)
        if (w.in_idle) {
            idle_remove(p, &w);
        }
        else {
            p->n_waking--;
        }
        CF_END_CRITICAL()
        cf_event_clear(&w.ev);
        if (r < 0) {
            log_critical(st, "Exception in worker");
            no_event = 1;
            break;
        }
    }
    if (!stopping) {
        CF_BEGIN_CRITICAL(p)
        stopping = p->stop;
        CF_END_CRITICAL()
    }
    if (current_orphan) {
        /* Nothing to flag: the pool is the parent's. */
    }
    else if (no_event && !stopping) {
        /* Leaving early, not because the pool stops: stop being counted,
         * so that a submit starts a worker in this one's place (counted,
         * it kept the pool below max_workers forever), and hand what is
         * queued to a sleeping worker, if any. */
        worker_uncount(p);
        CF_BEGIN_CRITICAL(p)
        (void)pool_cover(p);
        CF_END_CRITICAL()
    }
    else {
        /* As the stdlib's worker: flag the executor as shutting down. */
        CF_BEGIN_CRITICAL(p)
        p->shutdown = 1;
        CF_END_CRITICAL()
    }
    cf_event_fini(&w.ev);
    Py_DECREF(p);
    Py_RETURN_NONE;
}

/* Join the pool's threads, including any still being started by a
 * concurrent submit (the stdlib serialises those with _shutdown_lock). */
static int
pool_join(cf_pool *p)
{
    while (p->threads != NULL) {
        PyObject *snap = PySequence_List(p->threads);
        if (snap == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snap); i++) {
            PyObject *r = call_method_i(PyList_GET_ITEM(snap, i), "join",
                                         NULL);
            if (r == NULL) {
                Py_DECREF(snap);
                return -1;
            }
            Py_DECREF(r);
        }
        Py_ssize_t joined = PyList_GET_SIZE(snap);
        Py_DECREF(snap);
        Py_ssize_t starting = pool_n_starting(p);
        if (p->threads == NULL
            || (starting == 0 && PySet_GET_SIZE(p->threads) <= joined)) {
            return 0;
        }
        if (starting > 0) {
            /* Rare: a submit is inside Thread.start(); let it finish. */
            PyObject *r = PyObject_CallFunction(p->st->time_sleep, "d",
                                                0.001);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
    }
    return 0;
}

/* ---- the pool object (`_work_queue`) --------------------------------- */

static Py_ssize_t
pool_count(cf_pool *p)
{
    Py_ssize_t n;
    CF_BEGIN_CRITICAL(p)
    n = p->count;
    CF_END_CRITICAL()
    return n;
}

static PyObject *
pool_qsize(cf_pool *p, PyObject *unused)
{
    return PyLong_FromSsize_t(pool_count(p));
}

static PyObject *
pool_empty(cf_pool *p, PyObject *unused)
{
    return PyBool_FromLong(pool_count(p) == 0);
}

static int
pool_traverse(cf_pool *p, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(p));
    Py_VISIT(p->module);
    Py_VISIT(p->threads);
    Py_VISIT(p->broken);
    for (cf_chunk *c = p->head; c != NULL; c = c->next) {
        int start = c == p->head ? p->head_i : 0;
        int end = c == p->tail ? p->tail_i : CF_CHUNK;
        for (int i = start; i < end; i++) {
            Py_VISIT(c->items[i].future);
            Py_VISIT(c->items[i].fn);
            Py_VISIT(c->items[i].args);
            Py_VISIT(c->items[i].kwargs);
        }
    }
    return 0;
}

static int
pool_clear(cf_pool *p)
{
    cf_item it;
    while (pool_pop(p, &it)) {
        item_clear(&it);
    }
    Py_CLEAR(p->threads);
    Py_CLEAR(p->broken);
    return 0;
}

static void
pool_dealloc(cf_pool *p)
{
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    /* First: a registry walker's selfref then yields nothing. */
    if (p->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)p);
    }
    pool_clear(p);
    /* Unlink from the module's list of pools. */
    if (p->st != NULL) {
        cf_mutex_lock(&p->st->lock);
        if (p->prev_pool != NULL) {
            p->prev_pool->next_pool = p->next_pool;
        }
        else if (p->st->pools == p) {
            p->st->pools = p->next_pool;
        }
        if (p->next_pool != NULL) {
            p->next_pool->prev_pool = p->prev_pool;
        }
        cf_mutex_unlock(&p->st->lock);
    }
    /* Dead since ClearWeakRefs: freeing it runs no callback. */
    Py_CLEAR(p->selfref);
    while (p->head != NULL) {
        cf_chunk *c = p->head;
        p->head = c->next;
        PyMem_Free(c);
    }
    PyMem_Free(p->spare);
    /* Released last: st (in the module) was needed to unlink. */
    PyObject *module = p->module;
    tp->tp_free((PyObject *)p);
    Py_XDECREF(module);
    Py_DECREF(tp);
}

static PyObject *
pool_new_internal(cf_state *st, Py_ssize_t max_workers)
{
    cf_pool *p = (cf_pool *)st->workqueue_type->tp_alloc(st->workqueue_type,
                                                         0);
    if (p == NULL) {
        return NULL;
    }
    p->st = st;
    p->module = Py_XNewRef(PyType_GetModule(st->workqueue_type));
    if (p->module == NULL) {
        Py_DECREF(p);
        return NULL;
    }
    p->max_workers = max_workers;
    p->threads = PySet_New(NULL);
    if (p->threads == NULL) {
        Py_DECREF(p);
        return NULL;
    }
    p->selfref = PyWeakref_NewRef((PyObject *)p, NULL);
    if (p->selfref == NULL) {
        Py_DECREF(p);
        return NULL;
    }
    cf_mutex_lock(&st->lock);
    p->next_pool = st->pools;
    if (st->pools != NULL) {
        st->pools->prev_pool = p;
    }
    st->pools = p;
    cf_mutex_unlock(&st->lock);
    return (PyObject *)p;
}

static PyObject *
pool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyErr_SetString(PyExc_TypeError, "cannot create '_WorkQueue' instances");
    return NULL;
}

static PyMethodDef pool_methods[] = {
    {"qsize", (PyCFunction)pool_qsize, METH_NOARGS,
     "Number of queued work items (not counting running ones)."},
    {"empty", (PyCFunction)pool_empty, METH_NOARGS,
     "True if no work item is queued."},
    {"_worker", (PyCFunction)(void (*)(void))pool_worker, METH_FASTCALL,
     NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef pool_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(cf_pool, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot pool_slots[] = {
    {Py_tp_members, pool_members},
    {Py_tp_doc, "The work queue and worker threads of a ThreadPoolExecutor."},
    {Py_tp_new, pool_new},
    {Py_tp_dealloc, pool_dealloc},
    {Py_tp_traverse, pool_traverse},
    {Py_tp_clear, pool_clear},
    {Py_tp_methods, pool_methods},
    {0, NULL},
};

static PyType_Spec pool_spec = {
    .name = "cfutures._cfutures._WorkQueue",
    .basicsize = sizeof(cf_pool),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pool_slots,
};

/* ---- the executor ---------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cf_pool *pool;
    PyObject *max_workers;      /* as given (or computed) */
    PyObject *prefix;
    PyObject *initializer;
    PyObject *initargs;
    PyObject *weakreflist;
} cf_executor;

/* The executor's fields are written in its critical section (__init__
 * may run again and replace them all); readers take strong references
 * there. */

/* The executor's pool, a new reference, or NULL with RuntimeError. */
static cf_pool *
get_pool(cf_executor *ex)
{
    cf_pool *p;
    CF_BEGIN_CRITICAL(ex)
    p = (cf_pool *)Py_XNewRef(ex->pool);
    CF_END_CRITICAL()
    if (p == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ThreadPoolExecutor.__init__() was not called");
    }
    return p;
}

/* In the pool's critical section: whether a new worker is due (none
 * idle or being woken, room below max_workers); if so it is reserved,
 * counted in n_workers and n_starting, and *index is its number. */
static int
pool_reserve_worker(cf_pool *p, Py_ssize_t *index)
{
    if (p->n_workers >= p->max_workers) {
        return 0;
    }
    *index = p->n_workers++;
    /* Counted from the reservation, not just around start(): formatting
     * the name and constructing the Thread run Python code, and a
     * shutdown(wait=True) meanwhile must wait for this worker (the stdlib
     * holds _shutdown_lock over the whole submit), or it returns with the
     * item just queued not yet run. */
    p->n_starting++;
    return 1;
}

/* Start the worker reserved by pool_reserve_worker(); on failure the
 * reservation is given back. */
static int
start_worker(cf_executor *ex, cf_pool *p, Py_ssize_t index)
{
    int rc = -1;
    cf_state *st = p->st;
    /* Owned: formatting the name may run a prefix's __str__, which may
     * re-run __init__ and so drop the executor's reference to p. */
    Py_INCREF(p);
    PyObject *name = NULL, *target = NULL, *targs = NULL, *kw = NULL;
    PyObject *t = NULL, *prefix, *initializer, *initargs;
    CF_BEGIN_CRITICAL(ex)
    prefix = Py_XNewRef(ex->prefix);
    initializer = Py_XNewRef(ex->initializer);
    initargs = Py_XNewRef(ex->initargs);
    CF_END_CRITICAL()
    if (prefix == NULL || initializer == NULL || initargs == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ThreadPoolExecutor.__init__() was not called");
        goto error;
    }
    name = PyUnicode_FromFormat("%S_%zd", prefix, index);
    if (name == NULL) {
        goto error;
    }
    target = getattr_i((PyObject *)p, "_worker");
    if (target == NULL) {
        goto error;
    }
    targs = PyTuple_Pack(2, initializer, initargs);
    kw = PyDict_New();
    if (targs == NULL || kw == NULL
        || PyDict_SetItemString(kw, "name", name) < 0
        || PyDict_SetItemString(kw, "target", target) < 0
        || PyDict_SetItemString(kw, "args", targs) < 0) {
        goto error;
    }
    PyObject *noargs = PyTuple_New(0);
    if (noargs == NULL) {
        goto error;
    }
    t = PyObject_Call(st->threading_Thread, noargs, kw);
    Py_DECREF(noargs);
    if (t == NULL) {
        goto error;
    }
    PyObject *r = call_method_i(t, "start", NULL);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    /* Into the set before n_starting drops: pool_join must always see
     * the thread in one or the other. */
    int added = PySet_Add(p->threads, t);
    CF_BEGIN_CRITICAL(p)
    p->n_starting--;
    if (added < 0) {
        p->n_workers--;
    }
    CF_END_CRITICAL()
    if (added == 0) {
        rc = 0;
    }
    goto done;
error:
    CF_BEGIN_CRITICAL(p)
    p->n_starting--;
    p->n_workers--;
    CF_END_CRITICAL()
done:
    Py_XDECREF(prefix);
    Py_XDECREF(initializer);
    Py_XDECREF(initargs);
    Py_XDECREF(t);
    Py_XDECREF(kw);
    Py_XDECREF(targs);
    Py_XDECREF(target);
    Py_XDECREF(name);
    Py_DECREF(p);
    return rc;
}

/* Queue fn(*args, **kwargs); args is a tuple or NULL (or, with single,
 * the one argument), kwargs a dict or NULL, both stolen (also on error);
 * fn is borrowed. */
static PyObject *
submit_steal(cf_executor *ex, PyObject *fn, PyObject *args, PyObject *kwargs,
             int single)
{
    cf_pool *p = get_pool(ex);
    if (p == NULL) {
        goto error;
    }
    cf_state *st = p->st;
    PyObject *fut = cf_future_new(st);
    if (fut == NULL) {
        Py_DECREF(p);
        goto error;
    }
    /* A collection the allocation triggered may have run code that re-ran
     * __init__, which replaced the pool: submit to the current one, as the
     * stdlib's submit reads self._work_queue after making its future.
     * (A relaxed load: only a hint, get_pool reads it properly.) */
    if ((cf_pool *)cf_load_relaxed(&ex->pool) != p) {
        Py_DECREF(p);
        p = get_pool(ex);
        if (p == NULL) {
            Py_DECREF(fut);
            goto error;
        }
    }
    /* The checks and the push in one section: a shutdown, a stop or a
     * failed initializer comes either before it (and the submit raises)
     * or after it (and the item is in the queue the workers drain, or
     * that the initializer's failure fails).  A worker to start is
     * reserved in it too, so shutdown(wait=True) waits for it. */
    enum { OK, PUSH_FAILED, BROKEN, SHUTDOWN, INTERP_SHUTDOWN } why = OK;
    int start = 0;
    Py_ssize_t index = 0;
    PyObject *broken = NULL;
    CF_BEGIN_CRITICAL(p)
    if (p->broken != NULL) {
        why = BROKEN;
        broken = Py_NewRef(p->broken);
    }
    else if (p->shutdown) {
        why = SHUTDOWN;
    }
    else if (cf_load_acquire(&st->interp_shutdown)) {
        why = INTERP_SHUTDOWN;
    }
    else if (p->stop) {
        /* Stopped without shutdown(): its last executor let go of it
         * (this one re-ran __init__ meanwhile). */
        why = SHUTDOWN;
    }
    else if (pool_push(p, fut, Py_NewRef(fn), args, kwargs, single) < 0) {
        why = PUSH_FAILED;
    }
    else {
        Py_INCREF(fut);     /* the queue's reference */
        if (!pool_cover(p)) {
            start = pool_reserve_worker(p, &index);
        }
    }
    CF_END_CRITICAL()
    switch (why) {
    case OK:
        break;
    case BROKEN:
        PyErr_SetObject(st->BrokenThreadPool, broken);
        Py_DECREF(broken);
        goto refused;
    case SHUTDOWN:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        goto refused;
    case INTERP_SHUTDOWN:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after interpreter "
                        "shutdown");
        goto refused;
    case PUSH_FAILED:
        Py_DECREF(fn);      /* the reference meant for the queue */
        goto refused;
    }
    if (start && start_worker(ex, p, index) < 0) {
        /* As the stdlib: the item stays queued, submit raises. */
        Py_DECREF(fut);
        fut = NULL;
    }
    Py_DECREF(p);
    return fut;
refused:
    Py_DECREF(fut);
    Py_DECREF(p);
error:
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return NULL;
}

static PyObject *
submit_vector(cf_executor *ex, PyObject *fn, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *targs = NULL, *kwargs = NULL;
    if (nargs > 0) {
        targs = PyTuple_New(nargs);
        if (targs == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < nargs; i++) {
            PyTuple_SET_ITEM(targs, i, Py_NewRef(args[i]));
        }
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        kwargs = PyDict_New();
        if (kwargs == NULL) {
            Py_XDECREF(targs);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0) {
                Py_XDECREF(targs);
                Py_DECREF(kwargs);
                return NULL;
            }
        }
    }
    return submit_steal(ex, fn, targs, kwargs, 0);
}

PyObject *
cf_executor_submit(PyObject *executor, PyObject *fn, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    return submit_vector((cf_executor *)executor, fn, args, nargs, kwnames);
}

static PyObject *
executor_submit(cf_executor *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "ThreadPoolExecutor.submit() missing 1 required "
                        "positional argument: 'fn'");
        return NULL;
    }
    return submit_vector(self, args[0], args + 1, nargs - 1, kwnames);
}

static PyObject *
executor_shutdown(cf_executor *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    static const char *const kwlist[] = {"wait", "cancel_futures", NULL};
    PyObject *wait_o = Py_True, *cancel_o = Py_False;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "ThreadPoolExecutor.shutdown() takes from 1 to 2 "
                     "positional arguments but %zd were given", nargs + 1);
        return NULL;
    }
    if (nargs == 1) {
        wait_o = args[0];
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(key, kwlist[0]) == 0) {
            if (nargs == 1) {
                PyErr_SetString(PyExc_TypeError,
                                "ThreadPoolExecutor.shutdown() got multiple "
                                "values for argument 'wait'");
                return NULL;
            }
            wait_o = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(key, kwlist[1]) == 0) {
            cancel_o = args[nargs + i];
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "ThreadPoolExecutor.shutdown() got an unexpected "
                         "keyword argument '%S'", key);
            return NULL;
        }
    }
    int wait = PyObject_IsTrue(wait_o);
    int cancel = PyObject_IsTrue(cancel_o);
    if (wait < 0 || cancel < 0) {
        return NULL;
    }
    cf_pool *p = get_pool(self);
    if (p == NULL) {
        return NULL;
    }
    /* From here on submit refuses (it checks in this same section). */
    CF_BEGIN_CRITICAL(p)
    p->shutdown = 1;
    CF_END_CRITICAL()
    int rc = 0;
    while (cancel) {
        cf_item it;
        int got;
        CF_BEGIN_CRITICAL(p)
        got = pool_pop(p, &it);
        CF_END_CRITICAL()
        if (!got) {
            break;
        }
        /* cancel() runs done callbacks: no C lock is held here. */
        rc = cf_future_cancel((cf_future *)it.future);
        item_clear(&it);
        if (rc < 0) {
            break;
        }
    }
    /* Stopped even after a failed cancel: the workers run what is left. */
    pool_stop(p);
    if (rc >= 0 && wait) {
        rc = pool_join(p);
    }
    Py_DECREF(p);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The stdlib's private helpers, so none of its methods runs on our
 * object (they would reach for _idle_semaphore and _shutdown_lock). */
static PyObject *
executor_adjust_thread_count(cf_executor *self, PyObject *unused)
{
    cf_pool *p = get_pool(self);
    if (p == NULL) {
        return NULL;
    }
    int start = 0;
    Py_ssize_t index = 0;
    CF_BEGIN_CRITICAL(p)
    if (p->idle == NULL && p->n_waking == 0) {
        start = pool_reserve_worker(p, &index);
    }
    CF_END_CRITICAL()
    int rc = start ? start_worker(self, p, index) : 0;
    Py_DECREF(p);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
executor_initializer_failed(cf_executor *self, PyObject *unused)
{
    cf_pool *p = get_pool(self);
    if (p == NULL) {
        return NULL;
    }
    pool_initializer_failed(p);
    Py_DECREF(p);
    Py_RETURN_NONE;
}

/* copy.copy(executor): as the stdlib's shallow copy (a new object whose
 * attributes are the original's), a second handle on the same pool: same
 * queue, threads and shutdown state.  Without it copy.copy fell back to
 * pickling's protocol and raised TypeError. */
static PyObject *
executor_copy(cf_executor *self, PyObject *unused)
{
    PyTypeObject *tp = Py_TYPE(self);
    cf_executor *c = (cf_executor *)tp->tp_alloc(tp, 0);
    if (c == NULL) {
        return NULL;
    }
    /* After the allocation, which may have run a collection, and code
     * that re-ran __init__ on self.  The fields are one __init__'s. */
    CF_BEGIN_CRITICAL(self)
    if (self->pool != NULL) {
        (void)cf_fetch_add(&self->pool->handles, 1);
        c->pool = (cf_pool *)Py_NewRef(self->pool);
        c->max_workers = Py_XNewRef(self->max_workers);
        c->prefix = Py_XNewRef(self->prefix);
        c->initializer = Py_XNewRef(self->initializer);
        c->initargs = Py_XNewRef(self->initargs);
    }
    CF_END_CRITICAL()
    if (c->pool == NULL) {
        Py_DECREF(c);
        PyErr_SetString(PyExc_RuntimeError,
                        "ThreadPoolExecutor.__init__() was not called");
        return NULL;
    }
    /* Instance attributes (of a subclass), shallow, as copy.copy's. */
    PyObject *d = getattr_i((PyObject *)self, "__dict__");
    if (d == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(c);
            return NULL;
        }
        PyErr_Clear();
        return (PyObject *)c;
    }
    PyObject *cd = PyDict_Check(d) && PyDict_GET_SIZE(d) > 0
                   ? getattr_i((PyObject *)c, "__dict__") : NULL;
    int rc = cd == NULL ? (PyErr_Occurred() ? -1 : 0)
                        : PyDict_Update(cd, d);
    Py_XDECREF(cd);
    Py_DECREF(d);
    if (rc < 0) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

static PyObject *
executor_enter(PyObject *self, PyObject *unused)
{
    return Py_NewRef(self);
}

static PyObject *
executor_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargsf,
              PyObject *kwnames)
{
    static const char *const names[] = {"exc_type", "exc_val", "exc_tb"};
    PyObject *argv[3];
    if ((PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL)
        && cf_bind_args("Executor.__exit__", names, 3, 3, 1, args,
                        PyVectorcall_NARGS(nargsf), kwnames, argv) < 0) {
        return NULL;
    }
    /* self.shutdown(wait=True), so a subclass's shutdown() runs. */
    PyObject *meth = getattr_i(self, "shutdown");
    if (meth == NULL) {
        return NULL;
    }
    PyObject *wait_kw = Py_BuildValue("(s)", "wait");
    PyObject *r = NULL;
    if (wait_kw != NULL) {
        PyObject *cargs[1] = {Py_True};
        r = PyObject_Vectorcall(meth, cargs, 0, wait_kw);
        Py_DECREF(wait_kw);
    }
    Py_DECREF(meth);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

/* ---- map ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *fn;
    PyObject *args_iter;   /* buffersize only: the rest of zip(*iterables) */
    PyObject *ex_ref;      /* buffersize only: weakref to the executor */
    PyObject *submit;      /* bound submit of an overriding subclass */
    PyObject *end_time;    /* timeout + time.monotonic(), or NULL */
    PyObject **fs;         /* ring of futures, oldest at head */
    Py_ssize_t head;
    Py_ssize_t len;
    Py_ssize_t cap;        /* power of two */
    Py_ssize_t buffersize; /* 0: unbounded */
    char single;           /* one iterable: args_iter yields bare items */
    char started;
    char closed;
    /* Set (atomic exchange, acq_rel) while next() or close() runs: it
     * guards every field above, as a generator's "already executing"
     * does.  A second thread (or re-entering code) gets ValueError. */
    int running;
} cf_mapiter;

static int
fs_push(cf_mapiter *mi, PyObject *f)
{
    if (mi->len == mi->cap) {
        Py_ssize_t ncap = mi->cap ? mi->cap * 2 : 16;
        PyObject **nfs = PyMem_Malloc(ncap * sizeof(PyObject *));
        if (nfs == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < mi->len; i++) {
            nfs[i] = mi->fs[(mi->head + i) & (mi->cap - 1)];
        }
        PyMem_Free(mi->fs);
        mi->fs = nfs;
        mi->head = 0;
        mi->cap = ncap;
    }
    mi->fs[(mi->head + mi->len) & (mi->cap - 1)] = f;
    mi->len++;
    return 0;
}

static PyObject *
fs_pop(cf_mapiter *mi)
{
    PyObject *f = mi->fs[mi->head];
    mi->head = (mi->head + 1) & (mi->cap - 1);
    mi->len--;
    return f;
}

static PyObject *
monotonic_obj(void)
{
    return PyFloat_FromDouble((double)cf_monotonic_ns() / 1e9);
}

static int
cancel_any(PyObject *f, cf_state *st)
{
    if (cf_future_check(st, f)) {
        return cf_future_cancel((cf_future *)f) < 0 ? -1 : 0;
    }
    PyObject *r = call_method_i(f, "cancel", NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The generator's `finally: for future in fs: future.cancel()`, newest
 * first as in the stdlib (which reversed its list). */
static int
mapiter_cancel_rest(cf_mapiter *mi, cf_state *st)
{
    int rc = 0;
    while (mi->len > 0) {
        mi->len--;
        PyObject *f = mi->fs[(mi->head + mi->len) & (mi->cap - 1)];
        if (rc == 0 && cancel_any(f, st) < 0) {
            rc = -1;
        }
        Py_DECREF(f);
    }
    return rc;
}

static void
mapiter_release(cf_mapiter *mi)
{
    while (mi->len > 0) {
        Py_DECREF(fs_pop(mi));
    }
    Py_CLEAR(mi->args_iter);
    Py_CLEAR(mi->ex_ref);
    Py_CLEAR(mi->submit);
}

/* args: zip's tuple, or with single the item of the one iterable. */
static PyObject *
map_submit(cf_executor *ex, PyObject *submit, PyObject *fn, PyObject *args,
           int single)
{
    if (submit == NULL) {
        /* Fast path: zip's tuple becomes the call's argument tuple. */
        return submit_steal(ex, fn, Py_NewRef(args), NULL, single);
    }
    if (single) {
        PyObject *vec[2] = {fn, args};
        return PyObject_Vectorcall(submit, vec, 2, NULL);
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *small[8];
    PyObject **vec = n + 1 <= 8 ? small
                                : PyMem_Malloc((n + 1) * sizeof(PyObject *));
    if (vec == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    vec[0] = fn;
    for (Py_ssize_t i = 0; i < n; i++) {
        vec[i + 1] = PyTuple_GET_ITEM(args, i);
    }
    PyObject *r = PyObject_Vectorcall(submit, vec, n + 1, NULL);
    if (vec != small) {
        PyMem_Free(vec);
    }
    return r;
}

static PyObject *mapiter_next_impl(cf_mapiter *mi, cf_state *st);

static int
mapiter_enter(cf_mapiter *mi)
{
    if (cf_exchange(&mi->running, 1)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return -1;
    }
    return 0;
}

static PyObject *
mapiter_next(cf_mapiter *mi)
{
    cf_state *st = cf_state_from_type(Py_TYPE(mi));
    if (st == NULL || mapiter_enter(mi) < 0) {
        return NULL;
    }
    /* The caller of tp_iternext holds a reference to mi. */
    PyObject *r = mapiter_next_impl(mi, st);
    cf_store_release(&mi->running, 0);
    return r;
}

static PyObject *
mapiter_next_impl(cf_mapiter *mi, cf_state *st)
{
    if (mi->closed || mi->len == 0) {
        mi->closed = 1;
        mapiter_release(mi);
        return NULL;
    }
    mi->started = 1;
    if (mi->args_iter != NULL) {
        /* buffersize: top up before waiting, as 3.14's Executor.map. */
        PyObject *ex = cf_weakref_get(mi->ex_ref);
        if (ex != NULL) {
            PyObject *args = PyIter_Next(mi->args_iter);
            PyObject *f = NULL;
            if (args != NULL) {
                f = map_submit((cf_executor *)ex, mi->submit, mi->fn, args,
                               mi->single);
                Py_DECREF(args);
                if (f != NULL && fs_push(mi, f) < 0) {
                    Py_CLEAR(f);
                }
            }
            else if (!PyErr_Occurred()) {
                Py_CLEAR(mi->args_iter);
            }
            Py_DECREF(ex);
            if (f == NULL && PyErr_Occurred()) {
                goto error;
            }
        }
        if (mi->len == 0) {
            /* Only if submit() (a subclass's) gave no future yet added
             * none: nothing to wait for. */
            mi->closed = 1;
            mapiter_release(mi);
            return NULL;
        }
    }
    PyObject *f = fs_pop(mi);
    PyObject *res;
    if (mi->end_time == NULL && cf_future_check(st, f)
        && cf_future_is_done((cf_future *)f)) {
        res = cf_future_get_result((cf_future *)f);
    }
    else if (mi->end_time == NULL) {
        res = call_method_i(f, "result", NULL);
    }
    else {
        PyObject *now = monotonic_obj();
        PyObject *left = now ? PyNumber_Subtract(mi->end_time, now) : NULL;
        Py_XDECREF(now);
        res = left ? call_method_i(f, "result", left) : NULL;
        Py_XDECREF(left);
    }
    if (res == NULL) {
        /* _result_or_cancel: cancel this one, keeping the error. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (cancel_any(f, st) < 0) {
            PyErr_WriteUnraisable(f);
        }
        Py_DECREF(f);
        PyErr_Restore(type, value, tb);
        goto error;
    }
    Py_DECREF(f);
    return res;
error:
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (mapiter_cancel_rest(mi, st) < 0) {
            PyErr_WriteUnraisable((PyObject *)mi);
        }
        mi->closed = 1;
        mapiter_release(mi);
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}

/* Generator close(): a started iterator cancels what it has not yielded;
 * one never started only closes (a generator's finally never ran). */
static PyObject *
mapiter_close(cf_mapiter *mi, PyObject *unused)
{
    cf_state *st = cf_state_from_type(Py_TYPE(mi));
    if (st == NULL || mapiter_enter(mi) < 0) {
        return NULL;
    }
    int rc = 0;
    if (!mi->closed && mi->started) {
        rc = mapiter_cancel_rest(mi, st);
    }
    mi->closed = 1;
    mapiter_release(mi);
    cf_store_release(&mi->running, 0);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
mapiter_finalize(cf_mapiter *mi)
{
    /* Unreachable: no thread runs it (the flag is read for form). */
    if (mi->closed || !mi->started || cf_load_acquire(&mi->running)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = mapiter_close(mi, NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)mi);
    }
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

static int
mapiter_traverse(cf_mapiter *mi, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(mi));
    Py_VISIT(mi->fn);
    Py_VISIT(mi->args_iter);
    Py_VISIT(mi->ex_ref);
    Py_VISIT(mi->submit);
    Py_VISIT(mi->end_time);
    for (Py_ssize_t i = 0; i < mi->len; i++) {
        Py_VISIT(mi->fs[(mi->head + i) & (mi->cap - 1)]);
    }
    return 0;
}

static int
mapiter_clear(cf_mapiter *mi)
{
    mapiter_release(mi);
    Py_CLEAR(mi->fn);
    Py_CLEAR(mi->end_time);
    return 0;
}

static void
mapiter_dealloc(cf_mapiter *mi)
{
    PyTypeObject *tp = Py_TYPE(mi);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)mi) < 0) {
        return;   /* resurrected */
    }
    PyObject_GC_UnTrack(mi);
    mapiter_clear(mi);
    PyMem_Free(mi->fs);
    tp->tp_free((PyObject *)mi);
    Py_DECREF(tp);
}

static PyMethodDef mapiter_methods[] = {
    {"close", (PyCFunction)mapiter_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Stop the iteration and cancel the calls not yet yielded."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot mapiter_slots[] = {
    {Py_tp_doc, "Results of ThreadPoolExecutor.map(), in order."},
    {Py_tp_dealloc, mapiter_dealloc},
    {Py_tp_finalize, mapiter_finalize},
    {Py_tp_traverse, mapiter_traverse},
    {Py_tp_clear, mapiter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, mapiter_next},
    {Py_tp_methods, mapiter_methods},
    {0, NULL},
};

static PyType_Spec mapiter_spec = {
    .name = "cfutures._cfutures._MapIterator",
    .basicsize = sizeof(cf_mapiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = mapiter_slots,
};

static PyObject *
executor_map(cf_executor *self, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    PyObject *timeout = Py_None, *buffersize_o = Py_None, *fn_kw = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(key, "timeout") == 0) {
            timeout = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(key, "buffersize") == 0) {
            buffersize_o = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(key, "fn") == 0) {
            if (nargs > 0) {
                /* As the stdlib, whose map is Executor's. */
                PyErr_SetString(PyExc_TypeError,
                                "Executor.map() got multiple values for "
                                "argument 'fn'");
                return NULL;
            }
            fn_kw = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(key, "chunksize") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "ThreadPoolExecutor.map() got an unexpected keyword "
                         "argument '%S'", key);
            return NULL;
        }
    }
    if (nargs < 1 && fn_kw == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "ThreadPoolExecutor.map() missing 1 required "
                        "positional argument: 'fn'");
        return NULL;
    }
    PyObject *fn = nargs ? args[0] : fn_kw;
    Py_ssize_t first = nargs ? 1 : 0;
    Py_ssize_t buffersize = 0;
    if (buffersize_o != Py_None) {
        if (!PyLong_Check(buffersize_o)) {
            PyErr_SetString(PyExc_TypeError,
                            "buffersize must be an integer or None");
            return NULL;
        }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(buffersize_o, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow < 0 || (overflow == 0 && v < 1)) {
            PyErr_SetString(PyExc_ValueError,
                            "buffersize must be None or >= 1.");
            return NULL;
        }
        buffersize = (overflow > 0 || v > PY_SSIZE_T_MAX / 4)
                     ? PY_SSIZE_T_MAX / 4 : (Py_ssize_t)v;
    }
    PyObject *end_time = NULL;
    if (timeout != Py_None) {
        PyObject *now = monotonic_obj();
        if (now == NULL) {
            return NULL;
        }
        end_time = PyNumber_Add(timeout, now);
        Py_DECREF(now);
        if (end_time == NULL) {
            return NULL;
        }
    }
    /* A subclass that overrides submit() gets it called, as the stdlib's
     * map calls self.submit. */
    PyObject *submit = NULL;
    PyObject *sd = getattr_i((PyObject *)Py_TYPE(self), "submit");
    if (sd == NULL) {
        Py_XDECREF(end_time);
        return NULL;
    }
    if (sd != st->executor_submit_descr) {
        submit = getattr_i((PyObject *)self, "submit");
        if (submit == NULL) {
            Py_DECREF(sd);
            Py_XDECREF(end_time);
            return NULL;
        }
    }
    Py_DECREF(sd);
    PyObject *iterables = PyTuple_New(nargs - first);
    PyObject *it = NULL;
    cf_mapiter *mi = NULL;
    if (iterables == NULL) {
        goto error;
    }
    for (Py_ssize_t i = first; i < nargs; i++) {
        PyTuple_SET_ITEM(iterables, i - first, Py_NewRef(args[i]));
    }
    /* One iterable (the common case): its items are the arguments, with
     * no 1-tuple per call as zip() would make. */
    int single = nargs - first == 1;
    it = single ? PyObject_GetIter(args[first])
                : PyObject_Call((PyObject *)&PyZip_Type, iterables, NULL);
    Py_CLEAR(iterables);
    if (it == NULL) {
        goto error;
    }
    mi = PyObject_GC_New(cf_mapiter, st->mapiter_type);
    if (mi == NULL) {
        goto error;
    }
    mi->fn = Py_NewRef(fn);
    mi->args_iter = NULL;
    mi->ex_ref = NULL;
    mi->submit = submit;
    submit = NULL;
    mi->end_time = end_time;
    end_time = NULL;
    mi->fs = NULL;
    mi->head = mi->len = mi->cap = 0;
    mi->buffersize = buffersize;
    mi->single = (char)single;
    mi->started = mi->closed = 0;
    mi->running = 0;
    PyObject_GC_Track(mi);
    while (buffersize == 0 || mi->len < buffersize) {
        PyObject *a = PyIter_Next(it);
        if (a == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            break;
        }
        PyObject *f = map_submit(self, mi->submit, mi->fn, a, single);
        Py_DECREF(a);
        if (f == NULL) {
            goto error;
        }
        if (fs_push(mi, f) < 0) {
            Py_DECREF(f);
            goto error;
        }
    }
    if (buffersize) {
        mi->ex_ref = PyWeakref_NewRef((PyObject *)self, NULL);
        if (mi->ex_ref == NULL) {
            goto error;
        }
        mi->args_iter = it;
        it = NULL;
    }
    Py_XDECREF(it);
    return (PyObject *)mi;
error:
    /* As a failing list comprehension: the futures made so far run on. */
    Py_XDECREF(iterables);
    Py_XDECREF(it);
    Py_XDECREF(mi);
    Py_XDECREF(submit);
    Py_XDECREF(end_time);
    return NULL;
}

/* ---- executor object protocol --------------------------------------- */

static PyObject *
executor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return type->tp_alloc(type, 0);
}

static int
executor_init(cf_executor *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_workers", "thread_name_prefix",
                             "initializer", "initargs", NULL};
    PyObject *max_workers = Py_None, *prefix = NULL, *initializer = Py_None;
    PyObject *initargs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds,
                                     "|OOOO:ThreadPoolExecutor", kwlist,
                                     &max_workers, &prefix, &initializer,
                                     &initargs)) {
        return -1;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    PyObject *mw;
    if (max_workers == Py_None) {
        /* min(32, (os.cpu_count() or 1) + 4), as 3.11. */
        PyObject *os = PyImport_ImportModule("os");
        PyObject *n = os ? call_method_i(os, "cpu_count", NULL) : NULL;
        Py_XDECREF(os);
        if (n == NULL) {
            return -1;
        }
        long cpus = n == Py_None ? 1 : PyLong_AsLong(n);
        Py_DECREF(n);
        if (cpus == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (cpus < 1) {
            cpus = 1;
        }
        mw = PyLong_FromLong(cpus + 4 < 32 ? cpus + 4 : 32);
        if (mw == NULL) {
            return -1;
        }
    }
    else {
        mw = Py_NewRef(max_workers);
    }
    PyObject *zero = PyLong_FromLong(0);
    int le = zero ? PyObject_RichCompareBool(mw, zero, Py_LE) : -1;
    Py_XDECREF(zero);
    if (le < 0) {
        Py_DECREF(mw);
        return -1;
    }
    if (le) {
        Py_DECREF(mw);
        PyErr_SetString(PyExc_ValueError,
                        "max_workers must be greater than 0");
        return -1;
    }
    /* The stdlib compares len(self._threads) < max_workers, so a float
     * works there too: allow ceil(max_workers) threads. */
    Py_ssize_t n;
    if (PyFloat_Check(mw)) {
        double d = PyFloat_AS_DOUBLE(mw);
        /* NaN passed the check above; the stdlib's `len(...) < nan` never
         * holds, so no thread (and converting NaN would be undefined). */
        n = d != d ? 0
            : d > 1e9 ? 1000000000 : (Py_ssize_t)d + ((Py_ssize_t)d < d);
    }
    else {
        PyObject *idx = PyNumber_Index(mw);
        if (idx == NULL) {
            Py_DECREF(mw);
            return -1;
        }
        n = PyLong_AsSsize_t(idx);
        Py_DECREF(idx);
        if (n == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            n = PY_SSIZE_T_MAX / 2;
        }
    }
    if (initializer != Py_None && !PyCallable_Check(initializer)) {
        Py_DECREF(mw);
        PyErr_SetString(PyExc_TypeError, "initializer must be a callable");
        return -1;
    }
    int truthy = prefix == NULL ? 0 : PyObject_IsTrue(prefix);
    if (truthy < 0) {
        Py_DECREF(mw);
        return -1;
    }
    PyObject *pfx;
    if (truthy) {
        pfx = Py_NewRef(prefix);
    }
    else {
        /* The stdlib's class-wide counter, so names stay unique across
         * both executors. */
        PyObject *c = call_method_i((PyObject *)self, "_counter", NULL);
        if (c == NULL) {
            Py_DECREF(mw);
            return -1;
        }
        pfx = PyUnicode_FromFormat("ThreadPoolExecutor-%S", c);
        Py_DECREF(c);
        if (pfx == NULL) {
            Py_DECREF(mw);
            return -1;
        }
    }
    cf_pool *p = (cf_pool *)pool_new_internal(st, n);
    if (p == NULL) {
        Py_DECREF(mw);
        Py_DECREF(pfx);
        return -1;
    }
    if (initargs == NULL) {
        initargs = PyTuple_New(0);
        if (initargs == NULL) {
            Py_DECREF(p);
            Py_DECREF(mw);
            Py_DECREF(pfx);
            return -1;
        }
    }
    else {
        Py_INCREF(initargs);
    }
    p->handles = 1;
    /* All fields swapped in one section (readers take them in one too);
     * the old values are released after it, since that may run code. */
    PyObject *old[5];
    CF_BEGIN_CRITICAL(self)
    old[0] = (PyObject *)self->pool;
    old[1] = self->max_workers;
    old[2] = self->prefix;
    old[3] = self->initializer;
    old[4] = self->initargs;
    /* A store the relaxed load in submit_steal may race with. */
    cf_store_relaxed(&self->pool, p);
    self->max_workers = mw;
    self->prefix = pfx;
    self->initializer = Py_NewRef(initializer);
    self->initargs = initargs;
    CF_END_CRITICAL()
    if (old[0] != NULL) {
        pool_release_handle((cf_pool *)old[0]);
    }
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(old[i]);
    }
    return 0;
}

static int
executor_traverse(cf_executor *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pool);
    Py_VISIT(self->max_workers);
    Py_VISIT(self->prefix);
    Py_VISIT(self->initializer);
    Py_VISIT(self->initargs);
    return 0;
}

static int
executor_clear(cf_executor *self)
{
    /* Only when no other thread can reach self (dealloc, or the GC, which
     * stops the world): no critical section. */
    if (self->pool != NULL) {
        /* The executor is gone: its workers drain the queue and exit. */
        pool_release_handle(self->pool);
        cf_pool *p = self->pool;
        cf_store_relaxed(&self->pool, NULL);
        Py_DECREF(p);
    }
    Py_CLEAR(self->max_workers);
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->initializer);
    Py_CLEAR(self->initargs);
    return 0;
}

static void
executor_dealloc(cf_executor *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    executor_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The getters take their new reference in the executor's critical
 * section (a field of the pool in the pool's). */
#define GETTER(name, field)                                     \
    static PyObject *                                           \
    name(cf_executor *self, void *closure)                      \
    {                                                           \
        PyObject *r;                                            \
        CF_BEGIN_CRITICAL(self)                                 \
        r = Py_XNewRef(self->pool != NULL ? self->field : NULL); \
        CF_END_CRITICAL()                                       \
        if (r == NULL) {                                        \
            PyErr_SetString(PyExc_RuntimeError,                 \
                "ThreadPoolExecutor.__init__() was not called"); \
        }                                                       \
        return r;                                               \
    }

GETTER(executor_get_max_workers, max_workers)
GETTER(executor_get_work_queue, pool)
GETTER(executor_get_prefix, prefix)
GETTER(executor_get_initializer, initializer)
GETTER(executor_get_initargs, initargs)
#undef GETTER

static PyObject *
executor_get_threads(cf_executor *self, void *closure)
{
    cf_pool *p = get_pool(self);
    if (p == NULL) {
        return NULL;
    }
    /* Set at creation, never replaced while the pool is reachable. */
    PyObject *r = Py_NewRef(p->threads);
    Py_DECREF(p);
    return r;
}

static PyObject *
executor_get_broken(cf_executor *self, void *closure)
{
    cf_pool *p = get_pool(self);
    if (p == NULL) {
        return NULL;
    }
    PyObject *r;
    CF_BEGIN_CRITICAL(p)
    r = Py_NewRef(p->broken != NULL ? p->broken : Py_False);
    CF_END_CRITICAL()
    Py_DECREF(p);
    return r;
}

static PyObject *
executor_get_shutdown(cf_executor *self, void *closure)
{
    cf_pool *p = get_pool(self);
    if (p == NULL) {
        return NULL;
    }
    int shutdown;
    CF_BEGIN_CRITICAL(p)
    shutdown = p->shutdown;
    CF_END_CRITICAL()
    Py_DECREF(p);
    return PyBool_FromLong(shutdown);
}

static PyGetSetDef executor_getset[] = {
    {"_max_workers", (getter)executor_get_max_workers, NULL, NULL, NULL},
    {"_threads", (getter)executor_get_threads, NULL, NULL, NULL},
    {"_work_queue", (getter)executor_get_work_queue, NULL, NULL, NULL},
    {"_broken", (getter)executor_get_broken, NULL, NULL, NULL},
    {"_shutdown", (getter)executor_get_shutdown, NULL, NULL, NULL},
    {"_thread_name_prefix", (getter)executor_get_prefix, NULL, NULL, NULL},
    {"_initializer", (getter)executor_get_initializer, NULL, NULL, NULL},
    {"_initargs", (getter)executor_get_initargs, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef executor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(cf_executor, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* The docstrings start with a text signature ("name($self, ...)\n--\n\n"),
 * which gives inspect.signature() and help() the stdlib's signatures. */

PyDoc_STRVAR(executor_submit_doc,
"submit($self, fn, /, *args, **kwargs)\n--\n\n"
"Submits a callable to be executed with the given arguments.\n\n"
"Schedules the callable to be executed as fn(*args, **kwargs) and returns\n"
"a Future instance (a cfutures.Future) representing the execution of the\n"
"callable.\n\n"
"Returns:\n"
"    A Future representing the given call.\n\n"
"Raises:\n"
"    RuntimeError: If the executor was shut down, or interpreter shutdown\n"
"        has begun.\n"
"    BrokenThreadPool: If a worker's initializer failed.");

PyDoc_STRVAR(executor_map_doc,
"map($self, fn, *iterables, timeout=None, chunksize=1, buffersize=None)\n"
"--\n\n"
"Returns an iterator equivalent to map(fn, iter).\n\n"
"Args:\n"
"    fn: A callable that will take as many arguments as there are\n"
"        passed iterables.\n"
"    timeout: The maximum number of seconds to wait. If None, then there\n"
"        is no limit on the wait time.\n"
"    chunksize: The size of the chunks the iterable will be broken into\n"
"        before being passed to a child process. This argument is only\n"
"        used by ProcessPoolExecutor; it is ignored by\n"
"        ThreadPoolExecutor.\n"
"    buffersize: The number of submitted tasks whose results have not\n"
"        yet been yielded. If the buffer is full, iteration over the\n"
"        iterables pauses until a result is yielded from the buffer.\n"
"        If None, all input elements are eagerly collected, and a task is\n"
"        submitted for each.  (New in the stdlib in 3.14; cfutures has\n"
"        it on every version.)\n\n"
"Returns:\n"
"    An iterator equivalent to: map(func, *iterables) but the calls may\n"
"    be evaluated out-of-order.  Closing or dropping it cancels the calls\n"
"    that have not started.\n\n"
"Raises:\n"
"    TimeoutError: If the entire result iterator could not be generated\n"
"        before the given timeout.\n"
"    Exception: If fn(*args) raises for any values.");

PyDoc_STRVAR(executor_shutdown_doc,
"shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
"Clean-up the resources associated with the Executor.\n\n"
"It is safe to call this method several times. Otherwise, no other\n"
"methods can be called after this one.\n\n"
"Args:\n"
"    wait: If True then shutdown will not return until all running\n"
"        futures have finished executing and the resources used by the\n"
"        executor have been reclaimed.\n"
"    cancel_futures: If True then shutdown will cancel all pending\n"
"        futures. Futures that are completed or running will not be\n"
"        cancelled.");

PyDoc_STRVAR(executor_enter_doc,
"__enter__($self, /)\n--\n\n"
"Return the executor itself, for a with statement.");

PyDoc_STRVAR(executor_exit_doc,
"__exit__($self, /, exc_type, exc_val, exc_tb)\n--\n\n"
"Call self.shutdown(wait=True); the exception, if any, propagates.");

static PyMethodDef executor_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))executor_submit,
     METH_FASTCALL | METH_KEYWORDS, executor_submit_doc},
    {"map", (PyCFunction)(void (*)(void))executor_map,
     METH_FASTCALL | METH_KEYWORDS, executor_map_doc},
    {"shutdown", (PyCFunction)(void (*)(void))executor_shutdown,
     METH_FASTCALL | METH_KEYWORDS, executor_shutdown_doc},
    {"_adjust_thread_count", (PyCFunction)executor_adjust_thread_count,
     METH_NOARGS, NULL},
    {"_initializer_failed", (PyCFunction)executor_initializer_failed,
     METH_NOARGS, NULL},
    {"__copy__", (PyCFunction)executor_copy, METH_NOARGS,
     "__copy__($self, /)\n--\n\nA second executor on the same pool."},
    {"__enter__", (PyCFunction)executor_enter, METH_NOARGS,
     executor_enter_doc},
    {"__exit__", (PyCFunction)(void (*)(void))executor_exit,
     METH_FASTCALL | METH_KEYWORDS,
     executor_exit_doc},
    {NULL, NULL, 0, NULL},
};

/* The text signature gives inspect.signature(ThreadPoolExecutor) the
 * stdlib's.  3.14's stdlib adds **ctxkwargs, which only reach its
 * prepare_context() hook (for InterpreterPoolExecutor): cfutures has no
 * such hook and rejects unknown keywords, so its signature does not claim
 * them (the plain stdlib class rejects them too, from prepare_context). */
PyDoc_STRVAR(executor_doc,
"ThreadPoolExecutor(max_workers=None, thread_name_prefix='',\n"
"                   initializer=None, initargs=())\n--\n\n"
"An Executor that runs calls on a pool of threads.\n\n"
"Args:\n"
"    max_workers: The maximum number of threads that can be used to\n"
"        execute the given calls (default: min(32, os.cpu_count() + 4)).\n"
"    thread_name_prefix: An optional name prefix to give our threads.\n"
"    initializer: A callable used to initialize worker threads.\n"
"    initargs: A tuple of arguments to pass to the initializer.\n\n"
"Its futures are cfutures.Future, awaitable in asyncio.");

static PyType_Slot executor_slots[] = {
    {Py_tp_doc, (void *)executor_doc},
    {Py_tp_new, executor_new},
    {Py_tp_init, executor_init},
    {Py_tp_dealloc, executor_dealloc},
    {Py_tp_traverse, executor_traverse},
    {Py_tp_clear, executor_clear},
    {Py_tp_methods, executor_methods},
    {Py_tp_getset, executor_getset},
    {Py_tp_members, executor_members},
    {0, NULL},
};

static PyType_Spec executor_spec = {
    .name = "cfutures._cfutures.ThreadPoolExecutor",
    .basicsize = sizeof(cf_executor),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = executor_slots,
};

/* ---- interpreter exit and fork --------------------------------------- */

/* A new list of the module's live pools: the callers below run code that
 * may free a pool (a joined or dropped Thread releases the last
 * reference), which unlinks it from the st->pools list they would be
 * walking.  Under st->lock only the pools' weak references are collected
 * (a pool in the list may already be in its dealloc, blocked on the lock:
 * its own reference count must not be touched); PyWeakref_GetRef then
 * takes a strong reference to each pool that is still alive. */
static PyObject *
pools_snapshot(cf_state *st)
{
    PyObject *refs = PyList_New(0);
    PyObject *pools = PyList_New(0);
    if (refs == NULL || pools == NULL) {
        goto error;
    }
    int err = 0;
    cf_mutex_lock(&st->lock);
    for (cf_pool *p = st->pools; p != NULL && !err; p = p->next_pool) {
        /* No Python code runs: the list is ours, the weakref is alive
         * (its pool releases it only after unlinking, under the lock). */
        err = PyList_Append(refs, p->selfref);
    }
    cf_mutex_unlock(&st->lock);
    if (err < 0) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++) {
        PyObject *p = cf_weakref_get(PyList_GET_ITEM(refs, i));
        if (p != NULL) {
            err = PyList_Append(pools, p);
            Py_DECREF(p);
            if (err < 0) {
                goto error;
            }
        }
    }
    Py_DECREF(refs);
    return pools;
error:
    Py_XDECREF(refs);
    Py_XDECREF(pools);
    return NULL;
}

/* Registered with threading._register_atexit, as thread.py's _python_exit:
 * no new work, then every worker drains its queue and is joined. */
static PyObject *
python_exit(PyObject *module, PyObject *unused)
{
    cf_state *st = cf_get_state(module);
    /* Release: a submit that finds the pool stopped (in its critical
     * section, after pool_stop's) sees this too. */
    cf_store_release(&st->interp_shutdown, 1);
    PyObject *pools = pools_snapshot(st);
    if (pools == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pools); i++) {
        pool_stop((cf_pool *)PyList_GET_ITEM(pools, i));
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pools); i++) {
        if (pool_join((cf_pool *)PyList_GET_ITEM(pools, i)) < 0) {
            Py_DECREF(pools);
            return NULL;
        }
    }
    Py_DECREF(pools);
    Py_RETURN_NONE;
}

/* os.register_at_fork(after_in_child=...): the child has only the forking
 * thread.  The workers and their sleeping places are gone, so forget them;
 * a later submit starts fresh workers.  Work the parent queued is the
 * parent's: the parent's workers run it, so the child drops it unrun (a
 * fresh worker draining it ran every such call twice, once per process).
 * Its futures, and those of calls running at the fork, stay as they were
 * (pending, running) in the child, as with the stdlib, and no callback
 * runs: a cancel would run done-callbacks in the child, such as asyncio's,
 * which would write to the parent's event loop's self-pipe. */
static PyObject *
after_fork_child(PyObject *module, PyObject *unused)
{
    cf_state *st = cf_get_state(module);
    if (current_pool != NULL) {
        /* Forked by a task: once it returns, this thread (the child's only
         * one) leaves the worker loop instead of serving the pool. */
        current_orphan = 1;
    }
    current_returning = 0;
    /* The child's only thread: the locks are free (a free-threaded
     * CPython stops the world before fork(), and no thread holds st->lock
     * or a critical section while parked), taken here for form. */
    cf_mutex_lock(&st->lock);
    for (cf_pool *p = st->pools; p != NULL; p = p->next_pool) {
        CF_BEGIN_CRITICAL(p)
        p->idle = NULL;
        p->n_workers = 0;
        p->n_starting = 0;
        p->n_waking = 0;
        p->spinning = 0;
        p->spinner = NULL;
        p->n_returning = 0;
        CF_END_CRITICAL()
    }
    cf_mutex_unlock(&st->lock);
    PyObject *pools = pools_snapshot(st);
    if (pools == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pools); i++) {
        cf_pool *p = (cf_pool *)PyList_GET_ITEM(pools, i);
        /* The parent's workers are gone: forgotten before anything below
         * can run code that submits and starts a worker here. */
        if (p->threads != NULL && PySet_Clear(p->threads) < 0) {
            Py_DECREF(pools);
            return NULL;
        }
        /* Releasing the items may run __del__ methods, which may submit:
         * pop one at a time, and only the inherited ones (a submit here
         * pushes behind them). */
        Py_ssize_t inherited = pool_count(p);
        for (; inherited > 0; inherited--) {
            cf_item it;
            int got;
            CF_BEGIN_CRITICAL(p)
            got = pool_pop(p, &it);
            CF_END_CRITICAL()
            if (!got) {
                break;
            }
            item_clear(&it);
        }
    }
    Py_DECREF(pools);
    Py_RETURN_NONE;
}

static PyMethodDef lifecycle_defs[] = {
    {"_python_exit", python_exit, METH_NOARGS, NULL},
    {"_after_fork_child", after_fork_child, METH_NOARGS, NULL},
    {"_test_fail_worker_events", test_fail_worker_events, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int
cf_executor_setup(PyObject *module, cf_state *st)
{
    st->workqueue_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &pool_spec, NULL);
    if (st->workqueue_type == NULL) {
        return -1;
    }
    st->mapiter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &mapiter_spec, NULL);
    if (st->mapiter_type == NULL) {
        return -1;
    }
    st->executor_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &executor_spec, NULL);
    if (st->executor_type == NULL
        || PyModule_AddType(module, st->executor_type) < 0) {
        return -1;
    }
    st->executor_submit_descr = PyObject_GetAttrString(
        (PyObject *)st->executor_type, "submit");
    if (st->executor_submit_descr == NULL) {
        return -1;
    }
    PyObject *time = PyImport_ImportModule("time");
    if (time == NULL) {
        return -1;
    }
    st->time_sleep = PyObject_GetAttrString(time, "sleep");
    Py_DECREF(time);
    if (st->time_sleep == NULL) {
        return -1;
    }
    /* Compiled here, not taken from the package: the worker needs it before
     * and without cfutures/__init__.py. */
    PyObject *globals = PyDict_New();
    PyObject *modname = PyModule_GetNameObject(module);
    if (globals == NULL || modname == NULL
        || PyDict_SetItemString(globals, "__builtins__",
                                PyEval_GetBuiltins()) < 0
        || PyDict_SetItemString(globals, "__name__", modname) < 0) {
        Py_XDECREF(globals);
        Py_XDECREF(modname);
        return -1;
    }
    Py_DECREF(modname);
    PyObject *defined = PyRun_String("def _switch_point():\n    pass\n",
                                     Py_file_input, globals, globals);
    if (defined == NULL) {
        Py_DECREF(globals);
        return -1;
    }
    Py_DECREF(defined);
    st->switch_point = Py_XNewRef(PyDict_GetItemString(globals,
                                                       "_switch_point"));
    Py_DECREF(globals);
    if (st->switch_point == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cfutures: no switch point");
        return -1;
    }
    if (PyModule_AddFunctions(module, lifecycle_defs) < 0) {
        return -1;
    }
    PyObject *exit_fn = PyObject_GetAttrString(module, "_python_exit");
    PyObject *fork_fn = PyObject_GetAttrString(module, "_after_fork_child");
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *os = PyImport_ImportModule("os");
    int rc = -1;
    if (exit_fn == NULL || fork_fn == NULL || threading == NULL
        || os == NULL) {
        goto done;
    }
    PyObject *r = PyObject_CallMethod(threading, "_register_atexit", "O",
                                      exit_fn);
    if (r == NULL) {
        goto done;
    }
    Py_DECREF(r);
    if (PyObject_HasAttrString(os, "register_at_fork")) {
        PyObject *reg = PyObject_GetAttrString(os, "register_at_fork");
        PyObject *kw = reg ? Py_BuildValue("{s:O}", "after_in_child", fork_fn)
                           : NULL;
        PyObject *noargs = kw ? PyTuple_New(0) : NULL;
        r = noargs ? PyObject_Call(reg, noargs, kw) : NULL;
        Py_XDECREF(noargs);
        Py_XDECREF(kw);
        Py_XDECREF(reg);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
    }
    rc = 0;
done:
    Py_XDECREF(exit_fn);
    Py_XDECREF(fork_fn);
    Py_XDECREF(threading);
    Py_XDECREF(os);
    return rc;
}
