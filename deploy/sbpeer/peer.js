#!/usr/bin/env node
// sbpeer: a wire-level AMQP 1.0 peer that speaks enough of Azure Service Bus
// for the Go SDK (azservicebus) to run the cpvrefresh queue transport against
// it, with no Docker and no cloud. It is a test double of the service, not of
// the SDK: the SDK runs unchanged, over plain AMQP with SASL ANONYMOUS (what
// it does for a connection string with UseDevelopmentEmulator=true).
//
// What it implements, per queue (created on first use):
//   - $cbs put-token (any token is accepted: there is nothing to protect);
//   - sender links to "<queue>" (enqueue; x-opt-scheduled-enqueue-time holds a
//     message back; duplicate detection drops a MessageId seen within the
//     queue's window);
//   - receiver links on "<queue>" and "<queue>/$DeadLetterQueue" in peek-lock:
//     each delivery locks the message for the queue's lock duration, with the
//     lock token in the delivery tag (.NET GUID byte order) and in the
//     x-opt-lock-token delivery annotation, and the annotations
//     x-opt-enqueued-time, x-opt-sequence-number, x-opt-locked-until and
//     x-opt-scheduled-enqueue-time; header.delivery-count is the number of
//     earlier deliveries that failed (the SDK adds one);
//   - dispositions: accepted = complete; released = unlock, count unchanged
//     (the SDK releases messages that arrive after ReceiveMessages returned);
//     modified = abandon, count+1 (message-annotations are merged into the
//     application properties, as PropertiesToModify); rejected with
//     com.microsoft:dead-letter = move to the dead-letter queue with the error
//     info as application properties (DeadLetterReason,
//     DeadLetterErrorDescription, ...). A disposition for a lock that expired
//     or was replaced is answered with com.microsoft:message-lock-lost;
//   - lock expiry: the message is available again with its count+1; reaching
//     the queue's max delivery count dead-letters it (MaxDeliveryCountExceeded);
//   - "<queue>/$management" (and the dead-letter queue's): com.microsoft:
//     renew-lock, peek-message (active, locked and scheduled messages, by
//     sequence number), update-disposition, schedule-message and
//     cancel-scheduled-message.
//
// Not implemented: sessions, deferral, topics, transactions, TLS, the ATOM
// admin API (queue properties come from the control endpoint below).
//
// Usage: node peer.js [--port N] [--host H] [--control-port N]
//   Prints one line: "sbpeer listening amqp=<port> control=<port>".
//   Control (plain HTTP, for tests): PUT /queues/<name> with JSON
//   {"lockDurationMs":60000,"maxDeliveryCount":10,"duplicateWindowMs":600000}
//   sets a queue's properties (creating it); GET /queues/<name> returns its
//   counts and the operations clients asked of it ("ops", and
//   "deadLetterOps" for its dead-letter queue) by kind: send (a message
//   transferred in), completed / abandoned / released / dead-letter / reject
//   (a disposition of a delivery), and each management operation (renew-lock,
//   peek-message, update-disposition, schedule-message, ...). A receive adds
//   link credit at most, which is no operation of its own here. Exits when its standard input closes, so a test binary that dies
//   takes its peer with it.
'use strict';

const crypto = require('crypto');
const http = require('http');
const rhea = require('rhea');

const types = rhea.types;
const amqpMessage = rhea.message;

const DLQ = '$deadletterqueue';
const MGMT = '$management';

function parseArgs(argv) {
  const opts = { port: 5672, host: '127.0.0.1', controlPort: 0 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--port': opts.port = Number(v); i++; break;
      case '--host': opts.host = v; i++; break;
      case '--control-port': opts.controlPort = Number(v); i++; break;
      default:
        process.stderr.write(`sbpeer: unknown argument ${argv[i]}\n`);
        process.exit(2);
    }
  }
  return opts;
}

// ---- entities ---------------------------------------------------------------

const defaults = { lockDurationMs: 60000, maxDeliveryCount: 10, duplicateWindowMs: 10 * 60000 };

class Entity {
  constructor(name, props, isDLQ) {
    this.name = name;
    this.props = props; // shared with the dead-letter queue
    this.isDLQ = isDLQ;
    this.messages = new Map(); // sequence number -> record, in insertion (= sequence) order
    this.consumers = new Set(); // sender links (the SDK's receivers)
    this.seen = new Map(); // message id -> time first seen (duplicate detection)
    this.dlq = isDLQ ? null : new Entity(name + '/' + DLQ, props, true);
    this.nextSeq = 1;
    // Operations clients asked of this entity, by kind, for tests that
    // count round trips on the wire (GET /queues/<name>).
    this.ops = {};
  }

  count(op) {
    this.ops[op] = (this.ops[op] || 0) + 1;
  }

  enqueue(msg, now, scheduledAt) {
    // rhea puts the properties and header fields on the message itself.
    const id = msg.message_id;
    if (!this.isDLQ && typeof id === 'string' && id !== '') {
      const first = this.seen.get(id);
      if (first !== undefined && now - first < this.props.duplicateWindowMs) return null;
      this.seen.set(id, now);
    }
    const rec = {
      seq: this.nextSeq++,
      msg: stripBrokerAnnotations(msg),
      enqueuedAt: now,
      scheduledAt: scheduledAt || 0,
      failed: 0, // deliveries that ended without a settlement, or abandoned
      lock: null, // {token (hex), until (ms), delivery}
    };
    this.messages.set(rec.seq, rec);
    return rec;
  }

  available(now) {
    for (const rec of this.messages.values()) {
      if (!rec.lock && rec.scheduledAt <= now) return rec;
    }
    return null;
  }

  counts(now) {
    let active = 0, scheduled = 0, locked = 0;
    for (const rec of this.messages.values()) {
      if (rec.scheduledAt > now) scheduled++;
      else active++;
      if (rec.lock) locked++;
    }
    return { active, scheduled, locked };
  }

  byToken(token) {
    for (const rec of this.messages.values()) {
      if (rec.lock && rec.lock.token === token) return rec;
    }
    return null;
  }

  expireSeen(now) {
    for (const [id, at] of this.seen) {
      if (now - at >= this.props.duplicateWindowMs) this.seen.delete(id);
    }
  }
}

const queues = new Map(); // lower-case queue name -> Entity

function queueFor(name, create) {
  const key = name.toLowerCase();
  let q = queues.get(key);
  if (!q && create) {
    q = new Entity(key, Object.assign({}, defaults), false);
    queues.set(key, q);
  }
  return q;
}

// entityFor resolves a link address: "q", "q/$DeadLetterQueue", with an
// optional "/$management" suffix.
function entityFor(address) {
  if (typeof address !== 'string' || address === '') return { entity: null, mgmt: false };
  let parts = address.replace(/^amqps?:\/\/[^/]+\//, '').split('/');
  let mgmt = false;
  if (parts.length > 1 && parts[parts.length - 1].toLowerCase() === MGMT) {
    mgmt = true;
    parts = parts.slice(0, -1);
  }
  let dead = false;
  if (parts.length > 1 && parts[parts.length - 1].toLowerCase() === DLQ) {
    dead = true;
    parts = parts.slice(0, -1);
  }
  const q = queueFor(parts.join('/'), true);
  return { entity: dead ? q.dlq : q, mgmt };
}

// stripBrokerAnnotations drops the annotations the broker sets, so a message
// moved or re-scheduled gets fresh ones.
function stripBrokerAnnotations(msg) {
  const out = Object.assign({}, msg);
  delete out.delivery_annotations;
  delete out.delivery_count;
  if (out.message_id === undefined) out.message_id = crypto.randomUUID(); // Service Bus assigns one
  if (msg.message_annotations) {
    const ann = {};
    for (const k of Object.keys(msg.message_annotations)) {
      if (!['x-opt-enqueued-time', 'x-opt-sequence-number', 'x-opt-locked-until', 'x-opt-scheduled-enqueue-time',
        'x-opt-message-state', 'x-opt-deadletter-source', 'x-opt-enqueue-sequence-number'].includes(k)) {
        ann[k] = msg.message_annotations[k];
      }
    }
    out.message_annotations = ann;
  }
  return out;
}

// ---- lock tokens -----------------------------------------------------------

// dotnetOrder converts an RFC 4122 UUID to .NET's GUID byte order (and back:
// the swap is its own inverse), the form Service Bus puts in delivery tags.
function dotnetOrder(b) {
  const t = Buffer.from(b);
  [t[0], t[3]] = [t[3], t[0]];
  [t[1], t[2]] = [t[2], t[1]];
  [t[4], t[5]] = [t[5], t[4]];
  [t[6], t[7]] = [t[7], t[6]];
  return t;
}

function tokenHex(v) {
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (v && Buffer.isBuffer(v.value)) return v.value.toString('hex');
  return '';
}

// ---- wire form of a stored message ----------------------------------------

function annotated(entity, rec, now) {
  const ann = Object.assign({}, rec.msg.message_annotations || {});
  ann['x-opt-enqueued-time'] = new Date(rec.enqueuedAt);
  ann['x-opt-sequence-number'] = types.wrap_long(rec.seq);
  if (rec.scheduledAt) ann['x-opt-scheduled-enqueue-time'] = new Date(rec.scheduledAt);
  if (rec.scheduledAt > now) ann['x-opt-message-state'] = types.wrap_long(2);
  if (rec.lock) ann['x-opt-locked-until'] = new Date(rec.lock.until);
  if (entity.isDLQ && rec.deadLetterSource) ann['x-opt-deadletter-source'] = rec.deadLetterSource;
  const out = Object.assign({}, rec.msg);
  out.message_annotations = ann;
  out.delivery_count = rec.failed;
  return out;
}

// ---- delivering ------------------------------------------------------------

function pump(entity, now) {
  for (const link of entity.consumers) {
    while (link.is_open() && link.sendable()) {
      const rec = entity.available(now);
      if (!rec) return;
      const token = crypto.randomBytes(16);
      token[6] = (token[6] & 0x0f) | 0x40;
      token[8] = (token[8] & 0x3f) | 0x80;
      rec.lock = { token: token.toString('hex'), until: now + entity.props.lockDurationMs, delivery: null };
      const msg = annotated(entity, rec, now);
      msg.delivery_annotations = { 'x-opt-lock-token': types.wrap_uuid(token) };
      const d = link.send(msg, dotnetOrder(token));
      d.sbEntity = entity;
      d.sbToken = rec.lock.token;
      rec.lock.delivery = d;
    }
  }
}

function pumpAll(now) {
  for (const q of queues.values()) {
    pump(q, now);
    pump(q.dlq, now);
  }
}

// failDelivery ends a delivery that was not settled (lock expiry or abandon):
// the count goes up and, at the max delivery count, the message is
// dead-lettered.
function failDelivery(entity, rec, now, props) {
  rec.lock = null;
  rec.failed++;
  if (props) applyProperties(rec, props);
  if (!entity.isDLQ && rec.failed >= entity.props.maxDeliveryCount) {
    // Shown as delivered maxDeliveryCount times, as Service Bus shows it.
    rec.failed--;
    deadLetter(entity, rec, now, {
      DeadLetterReason: 'MaxDeliveryCountExceeded',
      DeadLetterErrorDescription: `Message could not be consumed after ${entity.props.maxDeliveryCount} delivery attempts.`,
    });
  }
}

function applyProperties(rec, props) {
  const ap = Object.assign({}, rec.msg.application_properties || {});
  for (const k of Object.keys(props)) ap[k] = props[k];
  rec.msg = Object.assign({}, rec.msg, { application_properties: ap });
}

function deadLetter(entity, rec, now, info) {
  entity.messages.delete(rec.seq);
  rec.lock = null;
  if (entity.isDLQ) return; // a dead-lettered message dead-lettered again is dropped, as on Service Bus
  applyProperties(rec, info || {});
  const moved = entity.dlq.enqueue(rec.msg, now, 0);
  moved.enqueuedAt = rec.enqueuedAt;
  moved.failed = rec.failed;
  moved.deadLetterSource = entity.name;
}

function expireLocks(now) {
  for (const q of queues.values()) {
    for (const entity of [q, q.dlq]) {
      for (const rec of Array.from(entity.messages.values())) {
        if (rec.lock && rec.lock.until <= now) failDelivery(entity, rec, now);
      }
    }
    q.expireSeen(now);
  }
}

// settle applies a settlement to the message holding token in entity. It
// returns null on success or an AMQP error (lock lost).
function settle(entity, token, status, now, opts) {
  const rec = entity.byToken(token);
  if (!rec || rec.lock.until <= now) {
    if (rec) failDelivery(entity, rec, now);
    return { condition: 'com.microsoft:message-lock-lost', description: 'The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.' };
  }
  switch (status) {
    case 'completed':
      entity.messages.delete(rec.seq);
      break;
    case 'released':
      rec.lock = null;
      break;
    case 'abandoned':
      failDelivery(entity, rec, now, opts.properties);
      break;
    case 'suspended':
      if (opts.properties) applyProperties(rec, opts.properties);
      deadLetter(entity, rec, now, opts.info);
      break;
    default:
      rec.lock = null;
  }
  return null;
}

// ---- management ------------------------------------------------------------

function reply(request, status, description, body) {
  const out = {
    correlation_id: request.message_id,
    application_properties: {
      'status-code': types.wrap_int(status),
      'status-description': description,
    },
  };
  if (body !== undefined) out.body = body;
  return out;
}

function mgmt(entity, request, now) {
  const ap = request.application_properties || {};
  const op = ap.operation;
  const body = request.body || {};
  if (op && op !== 'put-token') entity.count(String(op).replace(/^com\.microsoft:/, ''));
  switch (op) {
    case 'put-token':
      return reply(request, 202, 'Accepted');
    case 'com.microsoft:renew-lock': {
      const tokens = (body['lock-tokens'] || []).map(tokenHex);
      const expirations = [];
      for (const t of tokens) {
        const rec = entity.byToken(t);
        if (!rec || rec.lock.until <= now) {
          if (rec) failDelivery(entity, rec, now);
          const r = reply(request, 410, 'The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.');
          r.application_properties['error-condition'] = types.wrap_symbol('com.microsoft:message-lock-lost');
          return r;
        }
        rec.lock.until = now + entity.props.lockDurationMs;
        expirations.push(rec.lock.until);
      }
      return reply(request, 200, 'OK', types.wrap_map({ expirations: types.wrap_array(expirations, 0x83) }));
    }
    case 'com.microsoft:peek-message': {
      const from = Number(body['from-sequence-number'] || 0);
      const count = Number(body['message-count'] || 1);
      const found = [];
      for (const rec of entity.messages.values()) {
        if (rec.seq < from) continue;
        if (found.length >= count) break;
        found.push(types.wrap_map({ message: types.wrap_binary(amqpMessage.encode(annotated(entity, rec, now))) }));
      }
      if (found.length === 0) return reply(request, 204, 'No Content');
      return reply(request, 200, 'OK', types.wrap_map({ messages: types.wrap_list(found) }));
    }
    case 'com.microsoft:update-disposition': {
      const status = body['disposition-status'];
      const info = {};
      if (body['deadletter-reason'] !== undefined) info.DeadLetterReason = body['deadletter-reason'];
      if (body['deadletter-description'] !== undefined) info.DeadLetterErrorDescription = body['deadletter-description'];
      for (const t of (body['lock-tokens'] || []).map(tokenHex)) {
        const err = settle(entity, t, status, now, { properties: body['properties-to-modify'], info });
        if (err) {
          const r = reply(request, 410, err.description);
          r.application_properties['error-condition'] = types.wrap_symbol(err.condition);
          return r;
        }
      }
      return reply(request, 200, 'OK');
    }
    case 'com.microsoft:schedule-message': {
      const seqs = [];
      for (const item of body.messages || []) {
        const m = amqpMessage.decode(Buffer.from(item.message));
        const at = m.message_annotations && m.message_annotations['x-opt-scheduled-enqueue-time'];
        const rec = entity.enqueue(m, now, at ? new Date(at).getTime() : 0);
        seqs.push(rec ? rec.seq : 0);
      }
      return reply(request, 200, 'OK', types.wrap_map({ 'sequence-numbers': types.wrap_array(seqs, 0x81) }));
    }
    case 'com.microsoft:cancel-scheduled-message': {
      for (const s of body['sequence-numbers'] || []) {
        const rec = entity.messages.get(Number(s));
        if (rec && rec.scheduledAt > now) entity.messages.delete(rec.seq);
      }
      return reply(request, 200, 'OK');
    }
    default:
      return reply(request, 501, `operation ${op} is not implemented by sbpeer`);
  }
}

// ---- the AMQP server -------------------------------------------------------

// Outcomes are settled by hand (after the settlement is applied), and a
// modified outcome (abandon) is told apart from released.
const container = rhea.create_container({ id: 'sbpeer', autosettle: false, treat_modified_as_released: false });
const replyLinks = new Map(); // reply-to address -> sender link
const pendingReplies = new Map(); // reply-to address -> responses waiting for the link or its credit

function flushReplies(address) {
  const link = replyLinks.get(address);
  const pending = pendingReplies.get(address);
  if (!link || !pending) return;
  while (pending.length > 0 && link.is_open() && link.sendable()) link.send(pending.shift());
  if (pending.length === 0) pendingReplies.delete(address);
}

container.on('sender_open', (context) => {
  const link = context.sender;
  const source = link.remote.attach.source || {};
  const target = link.remote.attach.target || {};
  link.set_source({ address: source.address });
  link.set_target({ address: target.address });
  link.local.attach.snd_settle_mode = link.remote.attach.snd_settle_mode;
  link.local.attach.rcv_settle_mode = link.remote.attach.rcv_settle_mode;
  if (source.address === '$cbs' || /\/\$management$/i.test(source.address || '')) {
    replyLinks.set(target.address, link);
    link.sbReply = target.address;
    flushReplies(target.address);
    return;
  }
  const { entity } = entityFor(source.address);
  link.sbEntity = entity;
  entity.consumers.add(link);
});

container.on('receiver_open', (context) => {
  const link = context.receiver;
  const target = link.remote.attach.target || {};
  const source = link.remote.attach.source || {};
  link.set_target({ address: target.address });
  link.set_source({ address: source.address });
  link.local.attach.rcv_settle_mode = link.remote.attach.rcv_settle_mode;
  if (target.address === '$cbs') {
    link.sbMgmt = null;
    link.sbCBS = true;
    return;
  }
  const { entity, mgmt: isMgmt } = entityFor(target.address);
  link.sbEntity = entity;
  link.sbMgmt = isMgmt;
});

container.on('sendable', (context) => {
  if (context.sender.sbReply) flushReplies(context.sender.sbReply);
  if (context.sender.sbEntity) pump(context.sender.sbEntity, Date.now());
});

container.on('message', (context) => {
  const link = context.receiver;
  const msg = context.message;
  const now = Date.now();
  if (link.sbCBS || link.sbMgmt) {
    const entity = link.sbEntity || queueFor('$cbs', true);
    const out = mgmt(entity, msg, now);
    const to = msg.reply_to;
    if (!pendingReplies.has(to)) pendingReplies.set(to, []);
    pendingReplies.get(to).push(out);
    flushReplies(to);
    pumpAll(now);
    return;
  }
  const at = msg.message_annotations && msg.message_annotations['x-opt-scheduled-enqueue-time'];
  link.sbEntity.count('send');
  link.sbEntity.enqueue(msg, now, at ? new Date(at).getTime() : 0);
  pump(link.sbEntity, now);
});

function onOutcome(status) {
  return (context) => {
    const d = context.delivery;
    if (!d.sbEntity) return;
    const now = Date.now();
    const state = d.remote_state || {};
    let opts = {};
    let st = status;
    if (status === 'abandoned' && state.message_annotations) {
      opts.properties = state.message_annotations;
    }
    if (status === 'rejected') {
      const err = state.error || {};
      if (err.condition === 'com.microsoft:dead-letter') {
        st = 'suspended';
        opts.info = err.info || {};
      } else {
        st = 'abandoned';
      }
    }
    d.sbEntity.count(status === 'rejected' ? (st === 'suspended' ? 'dead-letter' : 'reject') : status);
    const lost = settle(d.sbEntity, d.sbToken, st, now, opts);
    if (lost) {
      d.update(true, amqpMessage.rejected({ error: lost }).described());
    } else if (status === 'rejected') {
      d.update(true, amqpMessage.rejected({}).described());
    } else if (status === 'accepted') {
      d.update(true, amqpMessage.accepted().described());
    } else if (status === 'released') {
      d.update(true, amqpMessage.released().described());
    } else {
      d.update(true, amqpMessage.modified({}).described());
    }
    pump(d.sbEntity, now);
  };
}

container.on('accepted', onOutcome('completed'));
container.on('released', onOutcome('released'));
container.on('modified', onOutcome('abandoned'));
container.on('rejected', onOutcome('rejected'));

function linkClosed(context) {
  const link = context.sender || context.receiver;
  if (link.sbReply) {
    replyLinks.delete(link.sbReply);
    pendingReplies.delete(link.sbReply);
  }
  if (link.sbEntity && link.sbEntity.consumers) link.sbEntity.consumers.delete(link);
}
container.on('sender_close', linkClosed);
container.on('receiver_close', linkClosed);
container.on('disconnected', (context) => {
  // The connection's links are gone; their locks stay until they expire, as
  // on Service Bus.
  for (const q of queues.values()) {
    for (const e of [q, q.dlq]) {
      for (const l of Array.from(e.consumers)) {
        if (l.connection === context.connection) e.consumers.delete(l);
      }
    }
  }
  for (const [addr, l] of replyLinks) {
    if (l.connection === context.connection) {
      replyLinks.delete(addr);
      pendingReplies.delete(addr);
    }
  }
});
container.on('error', (err) => {
  process.stderr.write(`sbpeer: ${err && err.message}\n`);
});

// ---- control endpoint ------------------------------------------------------

function control(req, res) {
  const m = /^\/queues\/([^/?]+)$/.exec(req.url || '');
  if (!m) {
    res.writeHead(404).end();
    return;
  }
  const q = queueFor(decodeURIComponent(m[1]), true);
  if (req.method === 'GET') {
    const now = Date.now();
    const c = q.counts(now);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(Object.assign(c, { deadLetter: q.dlq.messages.size, ops: q.ops, deadLetterOps: q.dlq.ops }, q.props)));
    return;
  }
  if (req.method !== 'PUT') {
    res.writeHead(405).end();
    return;
  }
  let text = '';
  req.on('data', (chunk) => { text += chunk; });
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(text || '{}');
    } catch (e) {
      res.writeHead(400).end('body is not JSON');
      return;
    }
    for (const k of ['lockDurationMs', 'maxDeliveryCount', 'duplicateWindowMs']) {
      if (body[k] !== undefined) {
        if (!Number.isInteger(body[k]) || body[k] <= 0) {
          res.writeHead(400).end(`${k} must be a positive integer`);
          return;
        }
        q.props[k] = body[k];
      }
    }
    res.writeHead(204).end();
  });
}

// ---- main ------------------------------------------------------------------

const opts = parseArgs(process.argv.slice(2));
const server = container.listen({ port: opts.port, host: opts.host });
// Without this, Nagle's algorithm holds a second transfer back until the
// client acknowledges the first (40ms with delayed ACKs), longer than the
// SDK waits for more messages after the first.
server.on('connection', (socket) => socket.setNoDelay(true));
server.on('listening', () => {
  const ctl = http.createServer(control);
  ctl.listen(opts.controlPort, opts.host, () => {
    process.stdout.write(`sbpeer listening amqp=${server.address().port} control=${ctl.address().port}\n`);
  });
});
server.on('error', (err) => {
  process.stderr.write(`sbpeer: listen: ${err.message}\n`);
  process.exit(1);
});
setInterval(() => {
  const now = Date.now();
  expireLocks(now);
  pumpAll(now);
}, 50).unref();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
