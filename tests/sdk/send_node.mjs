// Drive the official Segment Node SDK (@segment/analytics-node) against Livora.
//
//   node tests/sdk/send_node.mjs
//
// Environment:
//   LIVORA_TEST_DEPS  dir prepared by scripts/test-deps.sh (the SDK is loaded
//                     from $LIVORA_TEST_DEPS/node/node_modules; NODE_PATH does
//                     not apply to ESM imports, hence createRequire)
//   LIVORA_URL        base URL of the server, e.g. http://127.0.0.1:8080
//   LIVORA_WRITE_KEY  write key (analytics-node 3.x sends it as HTTP Basic auth
//                     and as `writeKey` in the JSON body)
//   RUN_ID            unique id for this run; all ids are derived from it
//   LIVORA_SDK_DEBUG  optional, "1" to dump every HTTP request to stderr
//
// Prints to stdout a JSON array with one object per call, taken from the event
// the SDK actually built (so it includes SDK-side normalisation):
//   {"type", "userId"|"anonymousId", "event"|"name"|"category"|"groupId"|"previousId",
//    "properties"|"traits", "messageId", "timestamp"}
// Exits non-zero if the SDK reported any error.

import { createRequire } from 'node:module'
import path from 'node:path'

function env(name) {
  const v = process.env[name]
  if (!v) {
    console.error(`send_node: ${name} is not set`)
    process.exit(2)
  }
  return v
}

const depsDir = env('LIVORA_TEST_DEPS')
const url = env('LIVORA_URL')
const writeKey = env('LIVORA_WRITE_KEY')
const runId = env('RUN_ID')

const require = createRequire(path.join(path.resolve(depsDir), 'node') + path.sep)
const { Analytics } = require('@segment/analytics-node')

const analytics = new Analytics({
  writeKey,
  host: url,
  path: '/v1/batch',
  flushAt: 100,
  flushInterval: 500,
  maxRetries: 2,
  httpRequestTimeout: 10000,
})

const errors = []
analytics.on('error', (err) => {
  const type = err.ctx?.event?.type ?? '?'
  errors.push(`${err.code} (${type}): ${err.reason?.message ?? err.reason}`)
})
if (process.env.LIVORA_SDK_DEBUG === '1') {
  analytics.on('http_request', (req) => {
    console.error(`send_node: ${req.method} ${req.url} ${JSON.stringify(req.headers)}\n${req.body}`)
  })
}

const userId = `node-${runId}`
const anonymousId = `node-anon-${runId}`

// Each call's callback receives (err, ctx) once the batch holding it has been
// delivered (or failed); ctx.event is the event exactly as it was serialised.
const delivered = []
function call(method, params) {
  delivered.push(
    new Promise((resolve) => {
      // A failed delivery is reported (once per event) by the 'error' listener.
      analytics[method](params, (_err, ctx) => {
        resolve(ctx?.event)
      })
    })
  )
}

call('identify', {
  userId,
  traits: { email: `node-${runId}@example.com`, plan: 'pro', logins: 3 },
})
call('track', {
  userId,
  event: 'Order Completed',
  properties: {
    order_id: `node-order-${runId}`,
    revenue: 42.5,
    currency: 'EUR',
    products: [{ sku: 'A1', qty: 2 }],
  },
})
call('page', { userId, category: 'Docs', name: 'Pricing', properties: { path: '/pricing' } })
call('screen', { userId, name: 'Home Screen', properties: { tab: 'feed' } })
call('group', { userId, groupId: `node-group-${runId}`, traits: { name: 'Acme', employees: 20 } })
call('alias', { previousId: anonymousId, userId })
call('track', { anonymousId, event: 'Product Viewed', properties: { sku: 'A1' } })

await analytics.closeAndFlush({ timeout: 30000 })
const events = await Promise.race([
  Promise.all(delivered),
  new Promise((resolve) => setTimeout(() => resolve(null), 5000).unref()),
])
if (events === null) errors.push('timed out waiting for delivery callbacks')

const keys = [
  'type',
  'userId',
  'anonymousId',
  'event',
  'name',
  'category',
  'groupId',
  'previousId',
  'properties',
  'traits',
  'messageId',
  'timestamp',
]
const described = (events ?? []).map((ev) => {
  const out = {}
  for (const k of keys) {
    if (ev && ev[k] !== undefined && ev[k] !== null) out[k] = ev[k]
  }
  return out
})
console.log(JSON.stringify(described, null, 2))

if (errors.length) {
  for (const e of errors) console.error(`send_node: SDK error: ${e}`)
  process.exit(1)
}
