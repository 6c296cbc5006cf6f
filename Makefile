# Passerelle: the two entry points of README.md, and a few helpers.
#   make lab    bring up the lab fleet in local containers and push a test mail through it
#   make test   the whole test suite: lint, unit and protocol tests, molecule scenarios
#   make controller  a deployment controller only (ansible-core + collections, no lab)
.PHONY: lab test lint unit molecule lab-destroy lab-shell lab-mail bench setup controller

lab:
	scripts/lab up

test:
	scripts/test all

setup:
	scripts/host-setup

controller:
	scripts/controller-setup

lint:
	scripts/test lint

unit:
	scripts/test unit

molecule:
	scripts/test molecule

lab-destroy:
	scripts/lab destroy

lab-shell:
	scripts/lab shell $(HOST)

lab-mail:
	scripts/lab mail
