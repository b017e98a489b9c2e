"""Alibaba Cloud CAMS (Chat App Message Service, API 2020-06-06): the WhatsApp number actions."""
