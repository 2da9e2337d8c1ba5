# The README's commands. Each prints its progress; all are idempotent.
.PHONY: setup lab lab-down lab-push lab-push-broken test lint unit component molecule docs

setup:      ## venv, collections, Docker engine, base image
	bash scripts/setup.sh

lab:        ## create the lab host and run ansible-playbook site.yml on it
	bash scripts/lab.sh up

lab-push:   ## push a new version of the lab's example app; prints the seconds to serving
	bash scripts/lab.sh push

lab-push-broken: ## push a broken version; shows the old one serving and the deploy record
	bash scripts/lab.sh push --broken

lab-down:   ## remove the lab host
	bash scripts/lab.sh down

test:       ## lint, unit/integration tests, every molecule scenario
	bash scripts/test.sh all

lint:
	bash scripts/test.sh lint

unit:
	bash scripts/test.sh unit

component:
	bash scripts/test.sh component

molecule:
	bash scripts/test.sh molecule $(SCENARIO)

docs:       ## regenerate each role's README from its argument specs
	bash scripts/docs.sh
