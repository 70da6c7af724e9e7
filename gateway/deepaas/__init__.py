"""The DEEPaaS v2 API beside ours, so DEEPaaS clients work unchanged: `/`, `/v2/`,
`/swagger.json` (`entry`), `/v2/models` with predict (`models`, `inputs`) and training
(`train`), DEEPaaS-shaped errors (`errors`) and the Swagger 2.0 document (`swagger2`)."""
