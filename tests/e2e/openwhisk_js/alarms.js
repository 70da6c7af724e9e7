// OpenWhisk's alarms feed through the official JavaScript client (npm `openwhisk`):
// feeds.create/get/delete on /whisk.system/alarms/alarm, a tick of the schedulers' fake clock
// (the file OW_CLOCK_FILE names) fires the trigger's rule. Prints one JSON line of findings.
'use strict'

const fs = require('fs')
const openwhisk = require('openwhisk')

const ow = openwhisk({ apihost: process.env.OW_APIHOST, api_key: process.env.OW_AUTH })
const CLOCK = process.env.OW_CLOCK_FILE
const FEED = '/whisk.system/alarms/alarm'
const CODE = "def main(args):\n    return {'greeting': args.get('hello'), 'from': args.get('source')}\n"

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function eventually (what, fn, timeoutMs = 90000) {
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

function advanceClock (seconds) {
  const now = new Date(fs.readFileSync(CLOCK, 'utf8').trim())
  fs.writeFileSync(CLOCK + '.tmp', new Date(now.getTime() + seconds * 1000).toISOString())
  fs.renameSync(CLOCK + '.tmp', CLOCK)
}

async function failure (promise) {
  try {
    await promise
    return 'no error'
  } catch (err) {
    return `${err.statusCode} ${err.message}`
  }
}

async function main () {
  const out = {}
  await ow.actions.create({ name: 'alarm-echo', action: CODE, kind: 'python:3', overwrite: true })
  const trigger = { name: 'js-alarm', trigger: { parameters: [{ key: 'source', value: 'trigger' }] } }
  await ow.triggers.create({ ...trigger, overwrite: true })
  await ow.rules.create({ name: 'js-alarm-rule', action: 'alarm-echo', trigger: 'js-alarm', overwrite: true })

  const feedAction = await ow.actions.get({ name: FEED })
  out.feedAnnotations = feedAction.annotations
  out.feedDelete = await failure(ow.actions.delete({ name: FEED }))
  const params = { cron: '* * * * *', trigger_payload: { hello: 'alarm' } }
  out.created = await ow.feeds.create({ name: FEED, trigger: 'js-alarm', params })
  out.read = (await ow.feeds.get({ name: FEED, trigger: 'js-alarm' })).response.result

  advanceClock(61) // past the next minute: one tick
  const ran = await eventually('alarm activation', async () => {
    const list = await ow.activations.list({ name: 'alarm-echo', limit: 20, docs: true })
    return list.find((a) => a.response && a.response.result && a.response.result.greeting === 'alarm')
  })
  out.fired = { name: ran.name, result: ran.response.result }

  const bad = { cron: '61 * * * *' }
  out.badCron = await failure(ow.feeds.create({ name: FEED, trigger: 'js-alarm', params: bad }))
  out.otherNamespace = await failure(
    ow.feeds.create({ name: FEED, trigger: '/someone-else/js-alarm', params })
  )
  out.deleted = (await ow.feeds.delete({ name: FEED, trigger: 'js-alarm' })).response.success
  out.readAfterDelete = await failure(ow.feeds.get({ name: FEED, trigger: 'js-alarm' }))
  console.log(JSON.stringify(out))
}

main().catch((err) => {
  console.error(err.stack || String(err))
  process.exit(1)
})
