// Drives the official JavaScript SDK (jdcloud-sdk-js) for the tests: reads
// a JSON array of cases on stdin, makes each request with the SDK's own vm
// service (its path escaping, query building and src/lib/signers/v2.js),
// and prints a JSON array of what the SDK put on the wire.
//
// A case: {name, op: "importImage" | "imageTasks", opts, region,
//          endpoint: {protocol, host}, accessKey, secretKey,
//          date: ISO time, nonce: UUID, send: bool}
// With send false the request is captured, not sent, and the date and the
// nonce are fixed; with send true it goes to the endpoint for real and the
// answer's status and body come back too.
//
// Usage: JDCLOUD_SDK_JS=/path/to/node_modules/jdcloud-sdk-js node sdk.js < cases.json
'use strict'

const path = require('path')
const sdk = process.env.JDCLOUD_SDK_JS
if (!sdk) {
  console.error('sdk.js: set JDCLOUD_SDK_JS to the jdcloud-sdk-js package folder')
  process.exit(2)
}
const JDCloud = require(path.join(sdk, 'src/lib/core'))
const VM = require(path.join(sdk, 'src/repo/vm/v1/vm.js'))
// The module instance v2.js calls for the nonce.
const uuid = require(require.resolve('uuid', { paths: [path.join(sdk, 'src/lib/signers')] }))

const quiet = () => {}
JDCloud.config.logger = quiet
const realFetch = JDCloud.fetch
const realV4 = uuid.v4
const realGetDate = JDCloud.util.date.getDate

function headersOf (h) {
  const out = {}
  h.forEach((v, k) => { out[k] = v })
  return out
}

async function runCase (c) {
  let captured = null
  if (c.send) {
    JDCloud.fetch = realFetch
    uuid.v4 = realV4
    JDCloud.util.date.getDate = realGetDate
  } else {
    const fake = (req) => {
      captured = req
      return Promise.resolve({
        ok: true,
        status: 200,
        headers: { get: () => '' },
        json: () => Promise.resolve({ requestId: 'captured', result: {} })
      })
    }
    fake.Request = realFetch.Request
    fake.Headers = realFetch.Headers
    JDCloud.fetch = fake
    uuid.v4 = () => c.nonce
    JDCloud.util.date.getDate = () => new Date(c.date)
  }
  const vm = new VM({
    credentials: { accessKeyId: c.accessKey, secretAccessKey: c.secretKey },
    regionId: c.region,
    endpoint: c.endpoint,
    logger: quiet
  })
  const out = { name: c.name }
  if (c.send) {
    // Keep the request the SDK sends: wrap fetch once more.
    const send = JDCloud.fetch
    const spy = (req) => { captured = req; return send(req) }
    spy.Request = send.Request
    spy.Headers = send.Headers
    JDCloud.fetch = spy
  }
  try {
    const result = await vm[c.op](c.opts, c.region)
    if (c.send) {
      out.status = result.responseObj ? result.responseObj.status : 0
      delete result.responseObj
      out.answer = result
    }
  } catch (e) {
    if (e && e.responseObj) {
      out.status = e.responseObj.status
      delete e.responseObj
      out.answer = e
    } else {
      out.error = String(e && e.stack ? e.stack : e)
    }
  }
  if (captured) {
    out.method = captured.method
    out.url = captured.url
    out.headers = headersOf(captured.headers)
    out.body = captured.method === 'GET' || c.send ? '' : await captured.text()
    out.authorization = captured.headers.get('authorization')
  }
  return out
}

async function main () {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  const results = []
  for (const c of cases) {
    results.push(await runCase(c))
  }
  process.stdout.write(JSON.stringify(results))
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(1)
})
