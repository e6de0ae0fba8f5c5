// A short scripted session of the npm `etcd3` client (on @grpc/grpc-js) against Concord DB: an
// etcd client written independently of etcdctl and of Concord.
//
//   CONCORD_ENDPOINTS=http://127.0.0.1:2379,http://127.0.0.1:2389 node session.js
//
// Exits 0 when every step gave the expected answer; otherwise prints what differed and exits 1.
'use strict';

const { Etcd3 } = require('etcd3');

const endpoints = (process.env.CONCORD_ENDPOINTS || '')
  .split(',')
  .map((e) => e.trim())
  .filter((e) => e.length > 0);
if (endpoints.length === 0) {
  console.error('session.js: set CONCORD_ENDPOINTS to comma-separated client URLs');
  process.exit(2);
}

let step = '(start)';

// Never hang a test run: a step that takes this long has failed.
setTimeout(() => {
  console.error(`node etcd3 session timed out at step '${step}'`);
  process.exit(1);
}, 60000).unref();

function expectEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) {
    throw new Error(`${what}: expected ${e}, got ${a}`);
  }
}

function expectTrue(condition, what) {
  if (!condition) {
    throw new Error(what);
  }
}

/** Resolves with the result of `poll()` once `done(result)` holds; rejects after `ms`. */
async function eventually(what, ms, poll, done) {
  const deadline = Date.now() + ms;
  for (;;) {
    const result = await poll();
    if (done(result)) {
      return result;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: still ${JSON.stringify(result)} after ${ms} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once `events` holds `count` entries; rejects after `ms`. */
function waitForEvents(events, count, ms) {
  return eventually(`${count} watch events`, ms, async () => events.slice(), (e) => e.length >= count);
}

async function main() {
  const client = new Etcd3({ hosts: endpoints, dialTimeout: 5000 });
  try {
    const prefix = `node-etcd3/${process.pid}/`;
    const key = (k) => prefix + k;

    step = 'put and get';
    const put = await client.put(key('greeting')).value('hello').exec();
    const firstRevision = Number(put.header.revision);
    expectTrue(firstRevision > 0, `put revision ${put.header.revision} is positive`);
    expectEqual(await client.get(key('greeting')).string(), 'hello', 'get greeting');
    const overwrite = await client.put(key('greeting')).value('hi').exec();
    expectEqual(Number(overwrite.header.revision), firstRevision + 1, 'overwrite revision');
    const range = await client.get(key('greeting')).exec();
    expectEqual(range.kvs.length, 1, 'range of one key');
    expectEqual(Number(range.kvs[0].version), 2, 'version after two puts');
    expectEqual(Number(range.kvs[0].create_revision), firstRevision, 'create revision');
    expectEqual(Number(range.kvs[0].mod_revision), firstRevision + 1, 'mod revision');
    expectEqual(await client.get(key('missing')).string(), null, 'get of a missing key');

    step = 'prefix get';
    await client.put(key('dir/a')).value('1');
    await client.put(key('dir/b')).value('2');
    await client.put(key('dir/c')).value('3');
    expectEqual(
      await client.getAll().prefix(key('dir/')).strings(),
      { [key('dir/a')]: '1', [key('dir/b')]: '2', [key('dir/c')]: '3' },
      'prefix get',
    );
    expectEqual(await client.getAll().prefix(key('dir/')).count(), 3, 'prefix count');
    expectEqual(
      await client.getAll().prefix(key('dir/')).limit(2).sort('Key', 'Descend').keys(),
      [key('dir/c'), key('dir/b')],
      'prefix get, sorted descending, limit 2',
    );

    step = 'delete';
    const deleted = await client.delete().key(key('dir/a')).exec();
    expectEqual(Number(deleted.deleted), 1, 'deleted count');
    const deletedAll = await client.delete().prefix(key('dir/')).getPrevious();
    expectEqual(
      deletedAll.map((kv) => kv.key.toString()).sort(),
      [key('dir/b'), key('dir/c')],
      'previous key-values of a prefix delete',
    );
    expectEqual(await client.getAll().prefix(key('dir/')).count(), 0, 'prefix count after delete');

    step = 'txn';
    const taken = await client
      .if(key('greeting'), 'Value', '==', 'hi')
      .then(client.put(key('txn')).value('then'))
      .else(client.put(key('txn')).value('else'))
      .commit();
    expectEqual(taken.succeeded, true, 'txn with a true compare succeeds');
    expectEqual(await client.get(key('txn')).string(), 'then', 'txn success branch ran');
    const notTaken = await client
      .if(key('greeting'), 'Version', '>', 5)
      .then(client.put(key('txn')).value('then again'))
      .else(client.get(key('greeting')), client.put(key('txn')).value('else'))
      .commit();
    expectEqual(notTaken.succeeded, false, 'txn with a false compare fails');
    expectEqual(notTaken.responses.length, 2, 'failure branch responses');
    const read = notTaken.responses[0].response_range;
    expectEqual(read.kvs[0].value.toString(), 'hi', 'range inside the failure branch');
    expectEqual(await client.get(key('txn')).string(), 'else', 'txn failure branch ran');

    step = 'lease';
    const lease = client.lease(30, { autoKeepAlive: false });
    lease.on('lost', (err) => console.error(`lease lost: ${err.message}`));
    const leaseId = await lease.grant();
    expectTrue(/^[0-9]+$/.test(leaseId) && leaseId !== '0', `lease id '${leaseId}' is a positive number`);
    await lease.put(key('leased/a')).value('x');
    await client.put(key('leased/b')).value('y').lease(leaseId);
    const attached = await client.get(key('leased/a')).exec();
    expectEqual(attached.kvs[0].lease, leaseId, 'the key carries the lease id');
    const alive = await lease.keepaliveOnce();
    expectEqual(alive.ID, leaseId, 'keep-alive answers for the lease');
    expectTrue(Number(alive.TTL) > 0 && Number(alive.TTL) <= 30, `keep-alive TTL ${alive.TTL} in (0, 30]`);
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: leaseId, keys: true });
    expectEqual(Number(ttl.grantedTTL), 30, 'granted TTL');
    expectEqual(
      ttl.keys.map((k) => k.toString()).sort(),
      [key('leased/a'), key('leased/b')],
      'keys attached to the lease',
    );
    await lease.revoke();
    expectEqual(await client.getAll().prefix(key('leased/')).count(), 0, 'revoking deletes the keys');
    const gone = await client.leaseClient.leaseTimeToLive({ ID: leaseId });
    expectEqual(Number(gone.TTL), -1, 'time-to-live of a revoked lease');

    step = 'watch';
    const events = [];
    const watcher = await client.watch().prefix(key('watched/')).withPreviousKV().create();
    watcher.on('put', (kv, previous) =>
      events.push(['put', kv.key.toString(), kv.value.toString(), previous ? previous.value.toString() : null]),
    );
    watcher.on('delete', (kv, previous) =>
      events.push(['delete', kv.key.toString(), previous ? previous.value.toString() : null]),
    );
    await client.put(key('watched/x')).value('1');
    await client.put(key('watched/x')).value('2');
    await client.put(key('unwatched')).value('no');
    await client.delete().key(key('watched/x'));
    await waitForEvents(events, 3, 10000);
    expectEqual(
      events,
      [
        ['put', key('watched/x'), '1', null],
        ['put', key('watched/x'), '2', '1'],
        ['delete', key('watched/x'), '2'],
      ],
      'watch events',
    );
    await watcher.cancel();

    step = 'watch from a past revision';
    const history = [];
    const replay = await client.watch().key(key('greeting')).startRevision(String(firstRevision)).create();
    replay.on('put', (kv) => history.push(kv.value.toString()));
    await waitForEvents(history, 2, 10000);
    expectEqual(history, ['hello', 'hi'], 'replayed history of greeting');
    await replay.cancel();

    step = 'maintenance status';
    const status = await client.maintenance.status();
    expectTrue(Number(status.leader) > 0, `status names a leader (${status.leader})`);

    step = 'members';
    const members = await client.cluster.memberList({});
    expectEqual(members.members.length, endpoints.length, 'member count');

    step = 'cleanup';
    await client.delete().prefix(prefix);
    expectEqual(await client.getAll().prefix(prefix).count(), 0, 'nothing left under the prefix');
  } finally {
    client.close();
  }
}

main().then(
  () => {
    console.log('node etcd3 session: ok');
    process.exit(0);
  },
  (err) => {
    console.error(`node etcd3 session failed at step '${step}': ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
