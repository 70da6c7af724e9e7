// Drives a deepfaas gateway with the official OpenWhisk JavaScript client (npm `openwhisk`).
// Env: OW_APIHOST (http://host:port), OW_AUTH (uuid:key). Prints one JSON line of findings.
'use strict'

const openwhisk = require('openwhisk')

const ow = openwhisk({ apihost: process.env.OW_APIHOST, api_key: process.env.OW_AUTH })
const CODE = [
  'def main(args):',
  "    print('hello from js', args.get('name'))",
  "    return {'greeting': 'Hello, ' + args.get('name', 'stranger') + '!'}",
  ''
].join('\n')

const INC = "def main(args):\n    return {'n': args.get('n', 0) + 1}\n"

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function eventually (what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    try {
      const value = await fn()
      if (value) return value
    } catch (err) {
      last = err
    }
    await sleep(200)
  }
  throw new Error(`${what}: not in ${timeoutMs} ms (${last})`)
}

async function main () {
  const out = {}
  const created = await ow.actions.create({ name: 'js-hello', action: CODE, kind: 'python:3', overwrite: true })
  out.created = { name: created.name, version: created.version, kind: created.exec.kind }

  out.blocking = await ow.actions.invoke({ name: 'js-hello', params: { name: 'Blocking' }, blocking: true, result: true })

  const accepted = await ow.actions.invoke({ name: 'js-hello', params: { name: 'Later' } })
  out.activationId = accepted.activationId
  const record = await eventually('activation', () => ow.activations.get({ name: accepted.activationId }))
  out.activation = { name: record.name, success: record.response.success, result: record.response.result }
  out.logs = (await ow.activations.logs({ name: accepted.activationId })).logs

  await ow.triggers.create({ name: 'js-trig', overwrite: true })
  await ow.rules.create({ name: 'js-rule', action: 'js-hello', trigger: 'js-trig', overwrite: true })
  const fired = await ow.triggers.invoke({ name: 'js-trig', params: { name: 'Fired' } })
  out.fired = fired.activationId
  const ran = await eventually('fired activation', async () => {
    const list = await ow.activations.list({ name: 'js-hello', limit: 20, docs: true })
    return list.find((a) => a.response && a.response.result && a.response.result.greeting === 'Hello, Fired!')
  })
  out.firedActivation = { name: ran.name, result: ran.response.result }
  out.rules = (await ow.rules.list()).map((r) => r.name)
  await ow.rules.disable({ name: 'js-rule' })
  out.disabled = (await ow.rules.get({ name: 'js-rule' })).status

  // packages: default parameters under the action's, a binding's over its package's
  await ow.packages.create({ name: 'js-pkg', overwrite: true, package: { parameters: [{ key: 'name', value: 'Package' }] } })
  await ow.actions.create({ name: 'js-pkg/hello', action: CODE, kind: 'python:3', overwrite: true })
  out.packaged = await ow.actions.invoke({ name: 'js-pkg/hello', blocking: true, result: true })
  await ow.packages.create({
    name: 'js-bind',
    overwrite: true,
    package: { binding: { namespace: '_', name: 'js-pkg' }, parameters: [{ key: 'name', value: 'Binding' }] }
  })
  out.bound = await ow.actions.invoke({ name: 'js-bind/hello', blocking: true, result: true })
  const pkg = await ow.packages.get({ name: 'js-pkg' })
  out.packageActions = pkg.actions.map((a) => a.name)
  out.packages = (await ow.packages.list()).map((p) => p.name).sort()

  // sequences: each result is the next one's input
  await ow.actions.create({ name: 'js-inc', action: INC, kind: 'python:3', overwrite: true })
  await ow.actions.create({ name: 'js-seq', sequence: ['/_/js-inc', '/_/js-inc', '/_/js-inc'], overwrite: true })
  const seq = await ow.actions.invoke({ name: 'js-seq', params: { n: 1 }, blocking: true })
  out.sequence = { result: seq.response.result, components: seq.logs.length }
  out.sequenceKind = (await ow.actions.get({ name: 'js-seq' })).exec.kind

  // count=true
  out.actionCount = await ow.actions.list({ count: true })
  out.activationCount = await ow.activations.list({ name: 'js-inc', count: true })
  out.packageCount = await ow.packages.list({ count: true })

  // a 4xx reaches the client with OpenWhisk's message
  try {
    await ow.actions.get({ name: 'js-no-such-action' })
    out.notFound = 'no error'
  } catch (err) {
    out.notFound = { statusCode: err.statusCode, message: err.message }
  }
  try {
    await ow.actions.create({ name: 'js-hello', action: CODE, kind: 'python:3' })
    out.conflict = 'no error'
  } catch (err) {
    out.conflict = { statusCode: err.statusCode, message: err.message }
  }
  console.log(JSON.stringify(out))
}

main().catch((err) => {
  console.error('FAILED:', err && err.message, err && err.error ? JSON.stringify(err.error) : '')
  process.exit(1)
})
